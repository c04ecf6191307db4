# Mask R-CNN, Swin-T 1x: mmdet's stock config with its backbone swapped for ConditionedSwin
# (conditioning off: equal to mmdet's SwinTransformer, same ImageNet-1k checkpoint).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedSwin', conditioning=dict()))
