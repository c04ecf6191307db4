# Mask R-CNN, XCiT-S12/16 backbone, no conditioning (the family's baseline), with the recipe of
# the official XCiT detection models: AdamW lr 1e-4, weight decay 0.05 (none on norms, position
# embeddings, temperature), multi-scale crop augmentation, 36 epochs with steps at 27 and 33,
# 2 images per GPU x 8 GPUs, SyncBN in the backbone. The stock mmdet config has that recipe;
# this file changes the backbone, the neck's input channels and the param-wise decay only.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
    '../_base_/models/xcit-s12-p16_det.py'
]
model = dict(backbone={{_base_.xcit_backbone}}, neck=dict(in_channels=[384, 384, 384, 384]))
optim_wrapper = dict(paramwise_cfg={{_base_.xcit_paramwise_cfg}})
