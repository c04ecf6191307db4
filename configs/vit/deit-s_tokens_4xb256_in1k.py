# deit-s_4xb256_in1k with conditioned embedded tokens (Gram solver).
_base_ = './deit-s_4xb256_in1k.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='auto'))))
