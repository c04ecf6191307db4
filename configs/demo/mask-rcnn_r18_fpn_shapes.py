# Quick start: a stock Mask R-CNN on the generated shapes dataset (tools/misc/generate_dataset.py).
# Inherits the stock mmdet config, mask-rcnn_r50_fpn_1x_coco.py, as its four bases with the
# shapes data in place of COCO's (not the stock file plus the data: mmengine refuses a key that
# two bases set), and changes only the backbone size, the class count and the schedule for a
# 128 px toy dataset that trains on 2 CPU cores in minutes.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../_base_/datasets/shapes_coco.py',
    'mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(depth=18, init_cfg=None),  # no download here: random init
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
log_processor = dict(window_size=10)
