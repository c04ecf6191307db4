# Study (tools/analysis_tools/conditioning_study.py): the tiny XCiT classifier of the
# classification quick start (32 px shapes) with conditioning off. The study varies
# `model.backbone.conditioning` and the seed; vit-/swin-tiny_shapes-cls.py swap the backbone.
_base_ = '../demo/xcit-n-p8_precond_shapes-cls.py'
model = dict(backbone=dict(conditioning=dict(_delete_=True)))  # off
