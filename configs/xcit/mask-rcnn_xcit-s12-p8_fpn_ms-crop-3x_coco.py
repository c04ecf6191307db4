# Mask R-CNN, XCiT-S12/8 baseline: the S12/16 recipe with 8x8 patches and the
# ImageNet-1k XCiT-S12/8 checkpoint (mmpretrain model zoo; distilled, 384 px, as the S12/16 one).
_base_ = './mask-rcnn_xcit-s12-p16_fpn_ms-crop-3x_coco.py'
pretrained = 'https://download.openmmlab.com/mmclassification/v0/xcit/xcit-small-12-p8_3rdparty-dist_in1k-384px_20230214-9f2178bc.pth'  # noqa
model = dict(backbone=dict(patch_size=8, init_cfg=dict(checkpoint=pretrained)))
