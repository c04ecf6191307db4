# xcit-s12-p16_8xb128_in1k with conditioned embedded tokens (Gram solver).
_base_ = './xcit-s12-p16_8xb128_in1k.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='auto'))))
