# vit-b-p16_64xb64_in1k with preconditioned attention (row-equilibrated head outputs).
_base_ = './vit-b-p16_64xb64_in1k.py'
model = dict(backbone=dict(conditioning=dict(precond=dict())))
