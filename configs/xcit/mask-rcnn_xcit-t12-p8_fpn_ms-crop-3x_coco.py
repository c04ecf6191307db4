# Mask R-CNN, XCiT-T12/8 baseline: the T12/16 recipe with 8x8 patches, the official
# drop-path rate of T12/8 and the ImageNet-1k XCiT-T12/8 checkpoint (mmpretrain model zoo;
# distilled, 384 px, as the T12/16 one).
_base_ = './mask-rcnn_xcit-t12-p16_fpn_ms-crop-3x_coco.py'
pretrained = 'https://download.openmmlab.com/mmclassification/v0/xcit/xcit-tiny-12-p8_3rdparty-dist_in1k-384px_20230213-a072174a.pth'  # noqa
model = dict(backbone=dict(patch_size=8, drop_path_rate=0.0, init_cfg=dict(checkpoint=pretrained)))
