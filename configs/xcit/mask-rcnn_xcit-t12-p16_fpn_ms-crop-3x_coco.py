# Mask R-CNN, XCiT-T12/16 baseline: the S12/16 recipe with another arch.
_base_ = './mask-rcnn_xcit-s12-p16_fpn_ms-crop-3x_coco.py'
model = dict(
    backbone=dict(arch='t12', drop_path_rate=0.05),
    neck=dict(in_channels=[192, 192, 192, 192]))
