# Study on real data: a tiny ViT (4 layers, 64 dims, 4 heads) on Fashion-MNIST at its own
# 28 px (patch 7: 16 tokens of 49 grey pixels, so the 64-dim patch tokens are full rank),
# conditioning off; data, schedule and ConditionMonitorHook as in xcit-tiny_fmnist.py.
_base_ = './xcit-tiny_fmnist.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedViT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128),
        img_size=28,
        patch_size=7,
        in_channels=1,
        out_type='cls_token',
        conditioning=dict()),
    head=dict(in_channels=64))
train_pipeline = [
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
