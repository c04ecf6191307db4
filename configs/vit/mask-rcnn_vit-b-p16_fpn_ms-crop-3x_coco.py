# Mask R-CNN, ViT-B/16 (ConditionedViT, conditioning off) with a ViTDet-style simple pyramid
# (strides 4-32 from the stride-16 map), on mmdet's Swin-T 3x multi-scale-crop recipe (AdamW
# 1e-4, wd 0.05, 36 epochs): backbone, neck inputs, param-wise decay.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
pretrained = 'https://download.openmmlab.com/mmclassification/v0/deit/deit-base_3rdparty_pt-16xb64_in1k_20211124-6f40c188.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedViT',
        arch='base',
        patch_size=16,
        drop_path_rate=0.1,
        pyramid_norm_cfg=dict(type='SyncBN'),
        conditioning=dict(),  # off; the variant configs add precond / spectral / tokens
        # ImageNet-1k DeiT-B (= ViT-B/16 trained on ImageNet-1k only; mmpretrain's model zoo,
        # the official DeiT weights converted); the detection form drops the class token and
        # its position. Train from scratch with --cfg-options model.backbone.init_cfg=None
        init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=pretrained)),
    neck=dict(in_channels=[768, 768, 768, 768]))
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'norm': dict(decay_mult=0.),
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
        }))
