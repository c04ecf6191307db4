# mask-rcnn_xcit-t12-p16_fpn_ms-crop-3x_coco with conditioned embedded tokens (Gram solver).
_base_ = './mask-rcnn_xcit-t12-p16_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='gram'))))
