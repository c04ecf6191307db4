# Tree crowns in aerial photographs (real data, `make demo-trees`): stock mmdet RetinaNet with a
# tiny XCiT (4 blocks, 64 dims, patch 8), conditioning off, trained from scratch on data/trees
# (tools/misc/prepare_trees.py: 400 px tiles of NEON aerial RGB at 10 cm, one class `tree`,
# boxes 8-107 px, median about 37; docs/trees.md). A CPU demo: heads cut to 64 channels and
# 2 convs, FPN levels from stride 4 (anchors of 16-25 px there) so that small crowns find
# anchors, 300 detections per tile (a tile holds up to 61 trees), a short AdamW schedule.
# The stock config, retinanet_r50_fpn_1x_coco.py, enters as its bases with the tree data in
# place of COCO's (not the stock file plus the data: mmengine refuses a key that two bases set);
# the SGD (lr 0.01) that the stock file sets on top of them gives way to the AdamW below.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/trees.py',
    'mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py',
    'mmdet::retinanet/retinanet_tta.py'
]
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedXCiT',
        arch=dict(embed_dims=64, depth=4, num_heads=4),
        patch_size=8,
        out_indices=(0, 1, 2, 3),  # one block per level, strides 4, 8, 16, 32
        conditioning=dict(),  # off; the *_precond / *_spectral / *_tokens configs set it
        init_cfg=None),
    neck=dict(in_channels=[64, 64, 64, 64], out_channels=64, start_level=0, num_outs=5),
    bbox_head=dict(
        num_classes=1,
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        anchor_generator=dict(strides=[4, 8, 16, 32, 64])),
    test_cfg=dict(max_per_img=300))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=4e-4, weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'pos_embed': dict(decay_mult=0.),
            'temperature': dict(decay_mult=0.)
        }),
    clip_grad=dict(max_norm=1.0))

# 12 iterations of 2 tiles per epoch (the 25 train tiles with trees), 0.84 s each on one
# CPU thread (measured, make demo-trees): 48 epochs (576 iterations) take 8.4 minutes.
max_epochs = 48
train_cfg = dict(max_epochs=max_epochs, val_interval=8)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[36, 44])
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
log_processor = dict(window_size=10)
