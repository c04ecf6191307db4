# Classification quick start (`make demo-cls`): the XCiT-S12 precond ImageNet config with a
# tiny XCiT (4 blocks of 64 channels), pointed at the generated ImageNet-style folder of
# `make data-cls` (3 shape classes, 3 x 128 train / 3 x 32 val images of 32 px); trains 30 short
# epochs (about a minute on 2 CPU cores) and reports top-1 accuracy.
_base_ = '../xcit/xcit-s12-p16_precond_8xb128_in1k.py'

data_root = 'data/shapes_imagenet32/'
model = dict(
    backbone=dict(embed_dims=64, depth=4, num_heads=4, tokens_norm=False, patch_size=8),
    head=dict(num_classes=3, in_channels=64),
    train_cfg=dict(_delete_=True))  # no Mixup / CutMix on a toy dataset
data_preprocessor = dict(num_classes=3)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 30
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs)
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_epochs))
