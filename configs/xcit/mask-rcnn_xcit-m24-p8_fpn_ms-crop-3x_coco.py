# Mask R-CNN, XCiT-M24/8 baseline: the M24/16 recipe with 8x8 patches, the official
# drop-path rate of M24/8 and the ImageNet-1k XCiT-M24/8 checkpoint (mmpretrain model zoo;
# distilled, 384 px, as the M24/16 one).
_base_ = './mask-rcnn_xcit-m24-p16_fpn_ms-crop-3x_coco.py'
pretrained = 'https://download.openmmlab.com/mmclassification/v0/xcit/xcit-medium-24-p8_3rdparty-dist_in1k-384px_20230214-5db925e0.pth'  # noqa
model = dict(backbone=dict(patch_size=8, drop_path_rate=0.15, init_cfg=dict(checkpoint=pretrained)))
