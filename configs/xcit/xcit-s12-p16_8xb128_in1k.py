# ImageNet-1k classification, XCiT-S12/16 (ConditionedXCiT) (conditioning off: the family's baseline), on the
# stock mmpretrain config; only the backbone changes.
_base_ = 'mmpretrain::xcit/xcit-small-12-p16_8xb128_in1k.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(backbone=dict(
    _delete_=True,
    type='ConditionedXCiT',
    arch='s12',  # embed_dims 384, depth 12, heads 8, layer scale 1.0, tokens_norm
    patch_size=16,
    mlp_ratio=4,
    qkv_bias=True,
    out_type='cls_token',
    conditioning=dict()))
