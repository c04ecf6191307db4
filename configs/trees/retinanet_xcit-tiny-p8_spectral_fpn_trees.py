# Tree crowns: the tiny-XCiT RetinaNet of retinanet_xcit-tiny-p8_fpn_trees.py with
# spectral conditioning of Q / K / V (the method's defaults, docs/methods.md).
_base_ = './retinanet_xcit-tiny-p8_fpn_trees.py'
model = dict(backbone=dict(conditioning=dict(spectral=dict())))
