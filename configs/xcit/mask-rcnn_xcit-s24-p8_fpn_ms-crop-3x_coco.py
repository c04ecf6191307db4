# Mask R-CNN, XCiT-S24/8 baseline: the S24/16 recipe with 8x8 patches, the official
# drop-path rate of S24/8 and the ImageNet-1k XCiT-S24/8 checkpoint (mmpretrain model zoo;
# distilled, 384 px, as the S24/16 one).
_base_ = './mask-rcnn_xcit-s24-p16_fpn_ms-crop-3x_coco.py'
pretrained = 'https://download.openmmlab.com/mmclassification/v0/xcit/xcit-small-24-p8_3rdparty-dist_in1k-384px_20230214-57298eca.pth'  # noqa
model = dict(backbone=dict(patch_size=8, drop_path_rate=0.1, init_cfg=dict(checkpoint=pretrained)))
