# deit-s_4xb256_in1k with preconditioned attention (row-equilibrated head outputs).
_base_ = './deit-s_4xb256_in1k.py'
model = dict(backbone=dict(conditioning=dict(precond=dict())))
