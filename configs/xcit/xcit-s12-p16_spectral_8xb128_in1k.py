# xcit-s12-p16_8xb128_in1k with spectral conditioning of Q/K/V (identity mode, the paper's lam=10;
# see docs/methods.md on lam).
_base_ = './xcit-s12-p16_8xb128_in1k.py'
model = dict(backbone=dict(conditioning=dict(spectral=dict(mode='identity', lam=10.))))
