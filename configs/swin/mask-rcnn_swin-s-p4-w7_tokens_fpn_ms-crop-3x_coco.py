# mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco with conditioned embedded tokens (SVD solver:
# Swin's linear patch embedding maps 48 pixel values to 96+ channels, so its token matrix is
# rank-deficient: the default gram solver would hand every image to svd anyway, so svd
# directly skips the wasted Gram step; see docs/methods.md).
# Its backbone starts from the baseline's public ImageNet-1k weights, which were trained
# without conditioning (conditioning changes the function of the same weights): for a
# conditioned ImageNet start see docs/get_started.md#pretrain-on-imagenet-then-fine-tune-on-coco
_base_ = './mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(conditioning=dict(tokens=dict(solver='svd'))))
