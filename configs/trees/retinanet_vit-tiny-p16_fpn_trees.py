# Tree crowns: the RetinaNet, data and schedule of retinanet_xcit-tiny-p8_fpn_trees.py with a
# tiny ViT (4 blocks, 64 dims, patch 16: global attention over 26 x 26 tokens at 416 px; each
# block's map goes through the ViTDet-style simple pyramid to one of strides 4-32).
_base_ = './retinanet_xcit-tiny-p8_fpn_trees.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConditionedViT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=256),
        img_size=416,  # 400 px tiles padded to a multiple of 32
        patch_size=16,
        out_indices=(0, 1, 2, 3),
        conditioning=dict(),  # off
        init_cfg=None))
