# Mask R-CNN, Swin-S 3x: what mmdet's Swin-S config changes in its Swin-T base (depths and the
# official ImageNet-1k Swin-S release), on the Swin-T 3x config here (mmdet's own Swin-S
# config is the mixed-precision variant of that recipe).
_base_ = './mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth'  # noqa
model = dict(
    backbone=dict(depths=[2, 2, 18, 2], init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
