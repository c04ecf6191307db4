# ImageNet-1k classification, XCiT-S12/16 (the family's baseline): mmpretrain's stock config
# with its backbone swapped for ConditionedXCiT (conditioning off: equal to mmpretrain's XCiT).
_base_ = 'mmpretrain::xcit/xcit-small-12-p16_8xb128_in1k.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(type='ConditionedXCiT', conditioning=dict()))
