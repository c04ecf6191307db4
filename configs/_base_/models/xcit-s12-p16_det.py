# The XCiT-S12/16 detection backbone and the optimizer's param-wise settings of the official
# XCiT detection recipe, as variables that detection configs put in place of the stock ones:
#   model = dict(backbone={{_base_.xcit_backbone}}, neck=dict(in_channels=[384] * 4))
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)

xcit_pretrained = 'https://download.openmmlab.com/mmclassification/v0/xcit/xcit-small-12-p16_3rdparty-dist_in1k-384px_20230213-ba36c982.pth'  # noqa
xcit_backbone = dict(
    _delete_=True,  # replaces the stock backbone entirely
    type='ConditionedXCiT',
    arch='s12',
    patch_size=16,
    drop_path_rate=0.05,
    bn_norm_cfg=dict(type='SyncBN'),  # patch embedding and LPI; one CPU process gets BN
    pyramid_norm_cfg=dict(type='SyncBN'),  # the stride-4 adapter (fpn1)
    conditioning=dict(),  # off; the variant configs add precond / spectral / tokens
    # ImageNet-1k XCiT-S12/16 of mmpretrain's model zoo: the official weights the official
    # detection recipe starts from (xcit_small_12_p16_384_dist.pth: distilled, 384 px),
    # converted; the detection form drops the classifier-only keys (class token, class
    # attention, final norm, head).
    # Train from scratch with --cfg-options model.backbone.init_cfg=None
    init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=xcit_pretrained))

# AdamW lr 1e-4 / weight decay 0.05 come from the stock config; no decay on these:
xcit_paramwise_cfg = dict(
    _delete_=True,
    custom_keys={
        'norm': dict(decay_mult=0.),
        'pos_embed': dict(decay_mult=0.),
        'temperature': dict(decay_mult=0.)
    })
