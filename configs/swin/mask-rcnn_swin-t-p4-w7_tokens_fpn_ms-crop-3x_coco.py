# mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco with conditioned embedded tokens (SVD solver:
# Swin's linear patch embedding maps 48 pixel values to 96+ channels, so its token matrix is
# rank-deficient: the default gram solver would hand every image to svd anyway, so svd
# directly skips the wasted Gram step; see docs/methods.md).
# Its backbone starts from the baseline's public ImageNet-1k weights, trained without
# conditioning: warm_start ramps the method in over the first epoch (7330 iterations at 16
# images each), so the first step computes what those weights compute. What that start costs
# against plain fine-tuning, measured: docs/get_started.md#starting-from-a-public-checkpoint
_base_ = './mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
model = dict(
    backbone=dict(conditioning=dict(tokens=dict(solver='svd'), warm_start=dict(iters=7330))))
