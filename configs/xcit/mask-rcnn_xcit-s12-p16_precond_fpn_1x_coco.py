# mask-rcnn_xcit-s12-p16_fpn_1x_coco with preconditioned attention.
_base_ = './mask-rcnn_xcit-s12-p16_fpn_1x_coco.py'
model = dict(backbone=dict(conditioning=dict(precond=dict())))
