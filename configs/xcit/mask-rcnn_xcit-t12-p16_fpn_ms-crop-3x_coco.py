# Mask R-CNN, XCiT-T12/16 baseline: the S12/16 recipe with another arch and its
# ImageNet-1k checkpoint (mmpretrain model zoo; distilled, 384 px, as the S12/16 one).
_base_ = './mask-rcnn_xcit-s12-p16_fpn_ms-crop-3x_coco.py'
pretrained = 'https://download.openmmlab.com/mmclassification/v0/xcit/xcit-tiny-12-p16_3rdparty-dist_in1k-384px_20230213-00a20023.pth'  # noqa
model = dict(
    backbone=dict(arch='t12', drop_path_rate=0.05, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[192, 192, 192, 192]))
