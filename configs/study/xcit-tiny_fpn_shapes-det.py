# Study: Mask R-CNN with a tiny XCiT (4 blocks, patch 8) on the generated COCO shapes at 96 px,
# conditioning off. Heads, data and AdamW recipe come from the detection quick start.
_base_ = '../demo/mask-rcnn_xcit-n-p8_precond_fpn_shapes.py'
img_scale = (96, 96)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=64, depth=4, num_heads=4),
        out_indices=(0, 1, 2, 3),
        conditioning=dict(_delete_=True)),  # off
    neck=dict(in_channels=[64, 64, 64, 64], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_head=dict(in_channels=64, fc_out_channels=256),
        mask_head=dict(in_channels=64, conv_out_channels=64),
        bbox_roi_extractor=dict(out_channels=64),
        mask_roi_extractor=dict(out_channels=64)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
