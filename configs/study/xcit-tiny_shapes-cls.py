# Study (tools/analysis_tools/conditioning_study.py): a tiny XCiT classifier on the generated
# ImageNet-style shapes (32 px, large shapes), conditioning off. The study varies `model.backbone.conditioning`
# and the seed; data, head and schedule come from the classification quick start.
_base_ = '../demo/xcit-n-p8_precond_shapes-cls.py'
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=64, depth=4, num_heads=4), patch_size=8,
                  conditioning=dict(_delete_=True)),  # off
    head=dict(in_channels=64))
train_dataloader = dict(batch_size=32)
val_dataloader = dict(batch_size=32)
test_dataloader = val_dataloader
