# ImageNet-1k classification, ViT-B/16 (ConditionedViT) (conditioning off: the family's baseline), on the
# stock mmpretrain config; only the backbone changes.
_base_ = 'mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedViT', conditioning=dict()))
