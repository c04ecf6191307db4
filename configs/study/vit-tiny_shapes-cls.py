# Study: a tiny ViT classifier (patch 4 on 32 px: 64 tokens) on the generated shapes,
# conditioning off.
_base_ = './xcit-tiny_shapes-cls.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedViT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128),
        img_size=32,
        patch_size=4,
        out_type='cls_token',
        conditioning=dict()),
    head=dict(in_channels=64))
