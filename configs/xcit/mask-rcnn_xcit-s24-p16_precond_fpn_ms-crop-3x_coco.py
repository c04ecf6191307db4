# mask-rcnn_xcit-s24-p16_fpn_ms-crop-3x_coco with preconditioned attention (row-equilibrated head outputs).
_base_ = './mask-rcnn_xcit-s24-p16_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(conditioning=dict(precond=dict())))
