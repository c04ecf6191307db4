# Tree crowns: the RetinaNet, data and schedule of retinanet_xcit-tiny-p8_fpn_trees.py with a
# tiny Swin (4 stages of 1 block, 32-256 dims, window 7; strides 4, 8, 16, 32).
_base_ = './retinanet_xcit-tiny-p8_fpn_trees.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedSwin',
        arch=dict(embed_dims=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8]),
        window_size=7,
        out_indices=(0, 1, 2, 3),
        conditioning=dict(),  # off
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256]))
