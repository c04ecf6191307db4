# vit-b-p16_64xb64_in1k with conditioned embedded tokens (Gram solver).
_base_ = './vit-b-p16_64xb64_in1k.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='auto'))))
