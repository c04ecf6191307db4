# Cascade Mask R-CNN (stock cascade heads) with an XCiT-S12/16 backbone, 1x, on mmdet's R-50
# config: backbone, neck inputs and the optimizer (AdamW lr 1e-4, wd 0.05, XCiT param-wise).
_base_ = [
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/models/xcit-s12-p16_det.py'
]
model = dict(backbone={{_base_.xcit_backbone}}, neck=dict(in_channels=[384, 384, 384, 384]))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg={{_base_.xcit_paramwise_cfg}})
