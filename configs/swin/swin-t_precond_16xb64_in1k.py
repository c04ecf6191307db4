# swin-t_16xb64_in1k with preconditioned attention (row-equilibrated head outputs).
_base_ = './swin-t_16xb64_in1k.py'
model = dict(backbone=dict(conditioning=dict(precond=dict())))
