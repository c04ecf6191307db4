# ImageNet-1k classification, ViT-B/16 (the family's baseline): mmpretrain's stock config with
# its backbone swapped for ConditionedViT (conditioning off: equal to mmpretrain's ViT).
_base_ = 'mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedViT', conditioning=dict()))
