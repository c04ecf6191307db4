# Mask R-CNN, XCiT-S12/8 baseline: the S12/16 recipe with 8x8 patches.
_base_ = './mask-rcnn_xcit-s12-p16_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(patch_size=8))
