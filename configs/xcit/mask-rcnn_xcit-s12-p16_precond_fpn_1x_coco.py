# mask-rcnn_xcit-s12-p16_fpn_1x_coco with preconditioned attention.
# Its backbone starts from the baseline's public ImageNet-1k weights, trained without
# conditioning: warm_start ramps the method in over the first epoch (7330 iterations at 16
# images each), so the first step computes what those weights compute. What that start costs
# against plain fine-tuning, measured: docs/get_started.md#starting-from-a-public-checkpoint
_base_ = './mask-rcnn_xcit-s12-p16_fpn_1x_coco.py'
model = dict(backbone=dict(conditioning=dict(precond=dict(), warm_start=dict(iters=7330))))
