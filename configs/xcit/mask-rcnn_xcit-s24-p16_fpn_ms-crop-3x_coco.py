# Mask R-CNN, XCiT-S24/16 baseline: the S12/16 recipe with another arch.
_base_ = './mask-rcnn_xcit-s12-p16_fpn_ms-crop-3x_coco.py'
model = dict(
    backbone=dict(arch='s24', drop_path_rate=0.1),
    neck=dict(in_channels=[384, 384, 384, 384]))
