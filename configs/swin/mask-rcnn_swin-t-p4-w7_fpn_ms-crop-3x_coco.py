# Mask R-CNN, Swin-T 3x multi-scale crop (the family's baseline): mmdet's stock config with its
# backbone swapped for ConditionedSwin (conditioning off: equal to mmdet's SwinTransformer).
# The backbone starts from the official ImageNet-1k Swin-T release, as in the stock config
# (`init_cfg`, converted by mmdet's `convert_weights=True`); train from scratch with
# --cfg-options model.backbone.init_cfg=None
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedSwin', conditioning=dict()))
