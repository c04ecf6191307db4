# docs/monitoring.md: xcit-tiny_shapes-cls_monitor.py with a small ViT (patch 8, 64 px: 64
# patch tokens and a class token); conditioning by --cfg-options as there.
_base_ = './xcit-tiny_shapes-cls_monitor.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedViT',
        img_size=64,
        patch_size=8,
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128)))
