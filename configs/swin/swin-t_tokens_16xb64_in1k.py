# swin-t_16xb64_in1k with conditioned embedded tokens (Gram solver).
_base_ = './swin-t_16xb64_in1k.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='gram'))))
