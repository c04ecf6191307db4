# Tree crowns in aerial photographs (tools/misc/prepare_trees.py data/trees, docs/trees.md):
# 400 px tiles of NEON aerial RGB at 10 cm, one class `tree`, COCO boxes, train / val / test
# splits, in place of COCO in mmdet's stock detection data settings (what this file does not
# set stays as there: dataset type, samplers, CocoMetric). A CPU demo: no workers.
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

data_root = 'data/trees/'
metainfo = dict(classes=('tree', ), palette=[(0, 160, 0)])
img_scale = (400, 400)  # the tiles' own size: no resampling (edge tiles are smaller)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # seen from above, a tile flipped either way is as likely as the tile itself
    dict(
        type='RandomFlip',
        prob=[0.25, 0.25, 0.25],
        direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/train.json',
        data_prefix=dict(img='images/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/val.json',
        data_prefix=dict(img='images/'),
        pipeline=test_pipeline))
# the test split: the val loader on the test tiles' annotations
test_dataloader = dict(
    val_dataloader, dataset=dict(val_dataloader['dataset'], ann_file='annotations/test.json'))
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = dict(ann_file=data_root + 'annotations/test.json')
