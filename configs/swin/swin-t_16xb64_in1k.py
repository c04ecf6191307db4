# ImageNet-1k classification, Swin-T (ConditionedSwin) (conditioning off: the family's baseline), on the
# stock mmpretrain config; only the backbone changes.
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedSwin', conditioning=dict()))
