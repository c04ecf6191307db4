# Mask R-CNN, Swin-T (ConditionedSwin, conditioning off) on mmdet's Swin-T 1x config.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedSwin',
        arch='tiny',
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        convert_weights=True,
        conditioning=dict(),
        init_cfg={{_base_.model.backbone.init_cfg}}))
