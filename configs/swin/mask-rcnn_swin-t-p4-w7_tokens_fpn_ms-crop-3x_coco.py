# mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco with conditioned embedded tokens (SVD solver:
# Swin's linear patch embedding maps 48 pixel values to 96+ channels, so its token matrix is
# rank-deficient and only the svd solver reaches kappa(X + C) <= 2; see docs/methods.md).
_base_ = './mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='svd'))))
