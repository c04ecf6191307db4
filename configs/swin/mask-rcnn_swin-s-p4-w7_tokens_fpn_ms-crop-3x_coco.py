# mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco with conditioned embedded tokens (SVD solver:
# Swin's linear patch embedding maps 48 pixel values to 96+ channels, so its token matrix is
# rank-deficient: the default gram solver would hand every image to svd anyway, so svd
# directly skips the wasted Gram step; see docs/methods.md).
_base_ = './mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='svd'))))
