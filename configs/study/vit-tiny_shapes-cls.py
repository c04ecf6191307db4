# Study: a tiny ViT classifier (patch 8 on 32 px: 16 tokens) on the generated shapes,
# conditioning off. Not patch 4: its 48-dim patches make the 64-dim tokens rank-deficient,
# which only the svd token solver fixes (docs/methods.md).
_base_ = './xcit-tiny_shapes-cls.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedViT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128),
        img_size=32,
        patch_size=8,
        out_type='cls_token',
        conditioning=dict()),
    head=dict(in_channels=64))
