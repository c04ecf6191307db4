# Mask R-CNN, XCiT-S12/16 baseline, 1x schedule (12 epochs, single-scale training) on mmdet's
# Swin-T 1x config (AdamW lr 1e-4, weight decay 0.05); backbone, neck inputs, param-wise decay.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '../_base_/models/xcit-s12-p16_det.py'
]
model = dict(backbone={{_base_.xcit_backbone}}, neck=dict(in_channels=[384, 384, 384, 384]))
optim_wrapper = dict(paramwise_cfg={{_base_.xcit_paramwise_cfg}})
