# docs/monitoring.md: xcit-tiny_shapes-cls_monitor.py with a small Swin (patch 4, window 4 on
# 64 px: 16 then 4 windows per image); conditioning by --cfg-options as there.
_base_ = './xcit-tiny_shapes-cls_monitor.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedSwin',
        img_size=64,
        window_size=4,
        arch=dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4]),
        out_indices=(1, )),
    neck=dict(type='GlobalAveragePooling'))
