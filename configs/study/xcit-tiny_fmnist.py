# Study on real data (tools/analysis_tools/conditioning_study.py --tasks fmnist): the tiny XCiT
# of the classification quick start (4 XCA blocks of 64 channels + 2 class-attention blocks,
# patch 8) on Fashion-MNIST, conditioning off. mmpretrain's stock FashionMNIST dataset reads
# data/fashion_mnist/ (`make data-fmnist`); the 28 px grey images are upsampled to 32 px (XCiT's
# patch 8 must divide the side) with the stock Resize, as mmpretrain's LeNet-5 MNIST config does
# (whose style it follows: the files' folder as `data_prefix`, the split chosen by `test_mode`).
# Train on a fixed subset (the first 2,000 of the 60,000 train images, 5 epochs of 63 iterations:
# what fits the study's CPU budget), top-1 on the full 10,000-image test split every epoch;
# ConditionMonitorHook logs κ of every attention layer.
# The study varies `model.backbone.conditioning` and the seed (and may change the subset, the
# epochs and the hook interval); vit-/swin-tiny_fmnist.py swap the backbone.
_base_ = '../demo/xcit-n-p8_precond_shapes-cls.py'

data_root = 'data/fashion_mnist/'
num_train = 2000
# Fashion-MNIST train-set pixel mean / std (0-255), one grey channel
preprocess = dict(
    type='ClsDataPreprocessor', num_classes=10, mean=[72.94], std=[90.02], to_rgb=False)
data_preprocessor = dict(_delete_=True, **preprocess)
model = dict(
    backbone=dict(in_channels=1, img_size=32, conditioning=dict(_delete_=True)),  # off
    head=dict(num_classes=10),
    data_preprocessor=preprocess)

train_pipeline = [
    dict(type='Resize', scale=32),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [dict(type='Resize', scale=32), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='FashionMNIST',
        data_prefix=data_root,
        test_mode=False,
        download=False,
        indices=num_train,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=250,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='FashionMNIST',
        data_prefix=data_root,
        split='test',
        test_mode=True,
        download=False,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 5
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0, end=max_epochs)
]
# κ per attention layer on 4 fixed train images, every 63 iterations (one epoch of 2,000
# images at batch 32) and after the last one
custom_hooks = [dict(type='ConditionMonitorHook', interval=63, num_images=4)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_epochs))
