# ImageNet-1k classification, Swin-T (the family's baseline): mmpretrain's stock config with
# its backbone swapped for ConditionedSwin (conditioning off: equal to mmpretrain's Swin).
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedSwin', conditioning=dict()))
