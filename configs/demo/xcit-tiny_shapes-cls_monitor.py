# Watching conditioning while a model trains (docs/monitoring.md): a small XCiT classifier
# on the generated ImageNet-style shapes folder (`python tools/misc/generate_dataset.py
# imagenet data/shapes_imagenet`, 3 classes, 64 px) with the ConditionMonitorHook.
# Baseline as written; conditioned twins by --cfg-options, e.g.
#   model.backbone.conditioning.precond.eps=1e-6  |  model.backbone.conditioning.spectral.lam=10.0
#   model.backbone.conditioning.tokens.solver=svd
# vit-tiny_* and swin-tiny_* inherit this file and swap the backbone.
_base_ = ['mmpretrain::_base_/default_runtime.py', '../_base_/datasets/shapes_imagenet.py']
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ConditionedXCiT',
        arch=dict(embed_dims=64, depth=4, num_heads=4),
        patch_size=8,
        cls_attn_layers=1),
    head=dict(
        type='LinearClsHead', num_classes=3, in_channels=64, loss=dict(type='CrossEntropyLoss')),
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        num_classes=3,
        to_rgb=True,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375]))

train_cfg = dict(by_epoch=False, max_iters=60, val_interval=60)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05), clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10)]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=60, by_epoch=False))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='ConditionMonitorHook', interval=10)]
randomness = dict(seed=0)
