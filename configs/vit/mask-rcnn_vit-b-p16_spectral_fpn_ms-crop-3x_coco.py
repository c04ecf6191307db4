# mask-rcnn_vit-b-p16_fpn_ms-crop-3x_coco with spectral conditioning of Q/K/V (identity mode,
# lam=1: the value the Fashion-MNIST study in docs/study.md supports for token attention; the
# paper's lam=10 collapsed attention there, see docs/methods.md on lam).
# Its backbone starts from the baseline's public ImageNet-1k weights, which were trained
# without conditioning (conditioning changes the function of the same weights): for a
# conditioned ImageNet start see docs/get_started.md#pretrain-on-imagenet-then-fine-tune-on-coco
_base_ = './mask-rcnn_vit-b-p16_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(conditioning=dict(spectral=dict(mode='identity', lam=1.))))
