# mask-rcnn_xcit-m24-p16_fpn_ms-crop-3x_coco with spectral conditioning of Q/K/V (identity mode, the paper's lam=10; see docs/methods.md on lam).
_base_ = './mask-rcnn_xcit-m24-p16_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(conditioning=dict(spectral=dict(mode='identity', lam=10.))))
