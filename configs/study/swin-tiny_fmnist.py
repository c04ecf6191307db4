# Study on real data: a tiny two-stage Swin (2 + 2 blocks, 32 / 64 dims, patch 4, window 4) on
# Fashion-MNIST upsampled to 32 px (8×8 patches: 4 windows, then 4×4: one window), conditioning
# off; global average pooling feeds the stock linear head. Data, schedule and
# ConditionMonitorHook as in xcit-tiny_fmnist.py.
_base_ = './xcit-tiny_fmnist.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedSwin',
        arch=dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4]),
        img_size=32,
        in_channels=1,
        window_size=4,
        out_indices=(1, ),
        conditioning=dict()),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(in_channels=64))
