# swin-t_16xb64_in1k with spectral conditioning of Q/K/V (identity mode, lam=1: the value the
# Fashion-MNIST study in docs/study.md supports for token attention; the paper's lam=10 collapsed
# attention there, see docs/methods.md on lam).
_base_ = './swin-t_16xb64_in1k.py'
model = dict(backbone=dict(conditioning=dict(spectral=dict(mode='identity', lam=1.))))
