# Quick start (`make demo`): Mask R-CNN with a preconditioned XCiT backbone, trained from
# scratch and evaluated on the generated shapes dataset in about 10 minutes on 2 CPU cores.
# The shapes data, heads and schedule come from the R-18 demo; this file swaps the backbone
# for a small XCiT (patch 8 for 128 px images) and the optimizer for AdamW.
_base_ = './mask-rcnn_r18_fpn_shapes.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedXCiT',
        arch=dict(embed_dims=128, depth=6, num_heads=4),  # an XCiT-N12 cut to 6 blocks
        patch_size=8,
        out_indices=(1, 3, 4, 5),
        conditioning=dict(precond=dict()),
        init_cfg=None),
    neck=dict(in_channels=[128, 128, 128, 128]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=4e-4, weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'pos_embed': dict(decay_mult=0.),
            'temperature': dict(decay_mult=0.)
        }),
    clip_grad=dict(max_norm=1.0))

max_epochs = 16
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[12, 15])
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
