# ImageNet-1k classification, DeiT-S (ConditionedViT) (conditioning off: the family's baseline), on the
# stock mmpretrain config; only the backbone changes.
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedViT', conditioning=dict()))
