# xcit-s12-p16_8xb128_in1k with preconditioned attention (row-equilibrated head outputs).
_base_ = './xcit-s12-p16_8xb128_in1k.py'
model = dict(backbone=dict(conditioning=dict(precond=dict())))
