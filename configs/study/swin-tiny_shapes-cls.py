# Study: a tiny two-stage Swin classifier (patch 4, window 4 on 32 px: 4 then 1 window) on
# the generated shapes,
# conditioning off; global average pooling feeds the stock linear head.
_base_ = './xcit-tiny_shapes-cls.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedSwin',
        arch=dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4]),
        img_size=32,
        window_size=4,
        out_indices=(1, ),
        conditioning=dict()),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(in_channels=64))
