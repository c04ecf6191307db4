# Mask R-CNN, Swin-T (ConditionedSwin, conditioning off: the family's baseline) on mmdet's
# Swin-T 3x multi-scale-crop config; only the backbone's type and arch spelling change.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedSwin',
        arch='tiny',  # embed_dims 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24)
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        convert_weights=True,
        conditioning=dict(),  # off; the variant configs add precond / spectral / tokens
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
