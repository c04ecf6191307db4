# mask-rcnn_xcit-t12-p16_fpn_ms-crop-3x_coco with conditioned embedded tokens (Gram solver).
# Its backbone starts from the baseline's public ImageNet-1k weights, which were trained
# without conditioning (conditioning changes the function of the same weights): for a
# conditioned ImageNet start see docs/get_started.md#pretrain-on-imagenet-then-fine-tune-on-coco
_base_ = './mask-rcnn_xcit-t12-p16_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='auto'))))
