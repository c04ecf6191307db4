"""Method 3, conditioned embedded tokens: X ← X + σ_max(X)·U Vᵀ per image.

With the thin SVD X = U Σ Vᵀ (N×D), X + C = U (Σ + σ_max I) Vᵀ, so κ(X + C) =
2σ_max / (σ_max + σ_min) <= 2 over the min(N, D) singular values. U Vᵀ is the polar factor
of X; the three solvers compute it differently (docs/methods.md):

* ``svd``: exact, also for rank-deficient X (the SVD completes the singular vectors of zero
  singular values); float32 (float64 for float64 input).
* ``gram`` (default): U Vᵀ = X (XᵀX)^(-1/2) (or (XXᵀ)^(-1/2) X when N < D), the smaller
  Gram matrix formed, eigendecomposed and applied in float64 (κ ≈ 2 up to κ(X) ≈ 1e6); the
  fastest exact solver on CPU at detection sizes, N ≫ D (4200×384: 174 ms vs 278 ms for
  ``svd``, 2 cores). Images whose Gram matrix says κ(X) > 1e6 (numerically rank-deficient
  X, e.g. Swin's linear 48→96 patch embedding) fall back to ``svd``, so κ(X + C) <= 2 holds
  for every X.
* ``newton_schulz``: Y ← 1.5Y − 0.5·Y YᵀY from Y = X/‖X‖_F (matmuls only, GPU-friendly),
  σ_max by power iteration; ``ns_iters`` = 30 reaches κ ≈ 2 up to κ(X) ≈ 1e4 (60 for 1e6).
  Full-rank X only.

All solvers return a finite result for degenerate X (all zeros, rank 1).
"""
import torch
import torch.nn as nn

from .options import TOKEN_SOLVERS, TokensCfg, parse_conditioning

__all__ = ['token_correction', 'condition_tokens', 'TokenConditioner']


def _tall(x: torch.Tensor) -> bool:
    return x.shape[-2] >= x.shape[-1]  # N >= D: work with the D×D side


def _correction_svd(x: torch.Tensor) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(x, full_matrices=False)  # (.., N, k), (.., k), (.., k, D)
    return s[..., :1, None] * (u @ vh)  # (..., N, D)


# the float64 Gram route keeps κ(X + C) <= 2 while λ_min(G) / λ_max(G) = 1 / κ(X)² >= 1e-12
# (measured at 196×384, 1024×96, 4200×384: κ(X + C) = 2.0000 at κ(X) = 1e6, 2.9-5.8 at 1e7)
GRAM_MIN_EIG_RATIO = 1e-12


def _correction_gram(x: torch.Tensor) -> torch.Tensor:
    x64 = x.to(torch.float64)
    g = x64.mT @ x64 if _tall(x) else x64 @ x64.mT  # (..., k, k), k = min(N, D)
    lam, q = torch.linalg.eigh(g)  # ascending eigenvalues σ_i², (..., k), (..., k, k)
    lmax = lam[..., -1:].clamp(min=0)  # (..., 1)
    # floor tiny/negative eigenvalues (rank tolerance; tiny keeps the zero matrix finite)
    floor = (lmax * torch.finfo(torch.float64).eps *
             g.shape[-1]).clamp(min=torch.finfo(torch.float64).tiny)
    inv_sqrt = (q * torch.maximum(lam, floor).rsqrt().unsqueeze(-2)) @ q.mT  # G^(-1/2)
    polar = x64 @ inv_sqrt if _tall(x) else inv_sqrt @ x64  # U Vᵀ, (..., N, D)
    c = (lmax.sqrt().unsqueeze(-1) * polar).to(x.dtype)
    # (numerically) rank-deficient images, beyond what the Gram matrix resolves: exact SVD
    deficient = lam[..., 0] <= GRAM_MIN_EIG_RATIO * lam[..., -1]  # (...)
    if deficient.dim() == 0:  # one matrix
        return _correction_svd(x) if deficient else c
    if deficient.any():
        c = c.index_put((deficient, ), _correction_svd(x[deficient]))
    return c


def _power_sigma_max_sq(g: torch.Tensor, iters: int) -> torch.Tensor:
    """Largest eigenvalue (..., 1, 1) of the PSD matrices ``g`` (..., k, k) by power
    iteration from the column of largest diagonal entry, Rayleigh quotient at the end."""
    j = g.diagonal(dim1=-2, dim2=-1).argmax(-1)  # (...)
    v = torch.take_along_dim(g, j[..., None, None], dim=-1)  # (..., k, 1)
    tiny = torch.finfo(g.dtype).tiny
    for _ in range(iters):
        v = g @ v
        v = v / v.norm(dim=-2, keepdim=True).clamp(min=tiny)
    return (v.mT @ g @ v) / (v.mT @ v).clamp(min=tiny)


def _correction_newton_schulz(x: torch.Tensor, iters: int) -> torch.Tensor:
    tall, tiny = _tall(x), torch.finfo(x.dtype).tiny
    fro = torch.linalg.matrix_norm(x, keepdim=True).clamp(min=tiny)  # (..., 1, 1)
    y = x / fro  # singular values in [0, 1]
    smax_sq = _power_sigma_max_sq(y.mT @ y if tall else y @ y.mT, iters)  # of Y
    for _ in range(iters):  # cubic Newton-Schulz for the polar factor
        y = 1.5 * y - 0.5 * (y @ (y.mT @ y) if tall else (y @ y.mT) @ y)
    return fro * smax_sq.clamp(min=0).sqrt() * y


def token_correction(x: torch.Tensor, solver: str = 'gram', ns_iters: int = 30) -> torch.Tensor:
    """C = σ_max(X)·U Vᵀ for token matrices ``x`` (..., N, D), in ``x``'s dtype.

    Computed in float32 or better with autocast off (``gram`` in float64). Differentiable.
    """
    if solver not in TOKEN_SOLVERS:
        raise ValueError(f'unknown solver {solver!r}; valid: {TOKEN_SOLVERS}')
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    with torch.autocast(x.device.type, enabled=False):
        if solver == 'svd':
            c = _correction_svd(work)
        elif solver == 'gram':
            c = _correction_gram(work)
        else:
            c = _correction_newton_schulz(work, ns_iters)
    return c.to(x.dtype)


def condition_tokens(x: torch.Tensor,
                     solver: str = 'gram',
                     detach: bool = True,
                     ns_iters: int = 30) -> torch.Tensor:
    """X + σ_max(X)·U Vᵀ per image, for ``x`` (B, N, D) (any leading dims); same shape/dtype.

    Args:
        solver: 'gram' (default), 'svd' or 'newton_schulz' (see the module docstring).
        detach: default True: C is a constant (the gradient w.r.t. x is the identity);
            False differentiates through the solver (svd/eigh gradients are not finite for
            repeated singular values, e.g. rank-deficient X; newton_schulz's always are).
        ns_iters: Newton-Schulz (and power) iterations, default 30.
    """
    if detach:
        with torch.no_grad():
            c = token_correction(x.detach(), solver, ns_iters)
    else:
        c = token_correction(x, solver, ns_iters)
    return x + c


class TokenConditioner(nn.Module):
    """Conditions embedded tokens (B, N, D) -> (B, N, D); no parameters.

    Args:
        solver (str): 'gram' (default) | 'svd' | 'newton_schulz'.
        detach (bool): no gradient through the correction (default True).
        position (str): where the backbone applies it, 'before_pos_embed' (default) |
            'after_pos_embed'; stored for the backbone, unused here.
        ns_iters (int): Newton-Schulz iterations (default 30).
    """

    def __init__(self,
                 solver: str = 'gram',
                 detach: bool = True,
                 position: str = 'before_pos_embed',
                 ns_iters: int = 30):
        super().__init__()
        self.cfg = parse_conditioning(
            dict(tokens=dict(solver=solver, detach=detach, position=position,
                             ns_iters=ns_iters))).tokens

    @classmethod
    def from_cfg(cls, cfg) -> 'TokenConditioner':
        """Build from a TokensCfg or an options dict (``dict()`` = defaults)."""
        if not isinstance(cfg, TokensCfg):
            cfg = parse_conditioning(dict(tokens=cfg if cfg is not None else {})).tokens
        return cls(cfg.solver, cfg.detach, cfg.position, cfg.ns_iters)

    @property
    def position(self) -> str:
        return self.cfg.position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return condition_tokens(x, c.solver, c.detach, c.ns_iters)

    def extra_repr(self) -> str:
        c = self.cfg
        ns = f', ns_iters={c.ns_iters}' if c.solver == 'newton_schulz' else ''
        return f'solver={c.solver}, detach={c.detach}, position={c.position}{ns}'
