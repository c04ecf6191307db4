# ImageNet-1k classification, DeiT-S (the family's baseline): mmpretrain's stock config with its
# backbone swapped for ConditionedViT (conditioning off: equal to mmpretrain's ViT).
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedViT', conditioning=dict()))
