"""Method 3, conditioned embedded tokens: X ← X + σ_max(X)·U Vᵀ per image.

With the thin SVD X = U Σ Vᵀ (N×D), X + C = U (Σ + σ_max I) Vᵀ, so κ(X + C) =
2σ_max / (σ_max + σ_min) <= 2 over the min(N, D) singular values. U Vᵀ is the polar factor
of X; the solvers compute it differently (docs/methods.md, solver table in
docs/performance.md):

* ``svd``: exact, also for rank-deficient X (the SVD completes the singular vectors of zero
  singular values); float32 (float64 for float64 input).
* ``gram``: C = σ_max X G^(-1/2) with the smaller Gram matrix G = XᵀX (XXᵀ when N < D)
  eigendecomposed, in float32 where the eigenvalue ratio λ_min / λ_max it finds is >= 1e-3
  (κ(X) <= 31: float32 is enough there, see ``GRAM32_MIN_EIG_RATIO``), again in float64 where
  it is in [1e-6, 1e-3) (κ(X) <= 1e3, which float32 still resolves); images below (κ(X)
  beyond 1e3 or rank-deficient X, e.g. Swin's linear 48→96 patch embedding) go to ``svd``.
  Only the images that need a second solver are redone. The fastest exact solver on CPU.
* ``newton_schulz``: matmuls only (GPU-friendly): Y ← aY + bY(YᵀY) + cY(YᵀY)² from
  Y = X / σ_max (σ_max by a Krylov / Rayleigh-Ritz estimate), ``ns_iters`` = 10 quintic steps (tuned
  coefficients while the small singular values grow, Newton's (15, -10, 3)/8 for the last 3):
  converged for κ(X) <= 1e4 in exact arithmetic, where the cubic iteration needs 26. Each
  image is then checked: ‖YᵀY − I‖ (max row sum, >= its spectral norm) <= ``NS_TOL`` bounds
  κ(X + C) by 2.0075; images that fail (rank-deficient or beyond 1e4) go to ``svd``.
* ``auto`` (default): ``gram`` on CPU, ``newton_schulz`` elsewhere (GPU eigh / svd are slow
  and synchronise); ``svd`` for tokens that are rank-deficient by construction (a
  :class:`TokenConditioner` whose ``rank_deficient`` is set, e.g. Swin's 48→96 patch
  embedding), which every other solver would hand to ``svd`` image by image after its own work.

All solvers return a finite result for degenerate X (all zeros, rank 1). The fallbacks are
data-dependent; under ``torch.compile`` they run through ``torch.cond`` (no graph break).
"""
import torch
import torch.nn as nn

from .options import TOKEN_SOLVERS, TokensCfg, parse_conditioning
from .token_solvers import correction_gram, correction_newton_schulz, correction_svd, resolve_solver

__all__ = ['token_correction', 'condition_tokens', 'TokenConditioner', 'resolve_solver']


def token_correction(x: torch.Tensor, solver: str = 'auto', ns_iters: int = 10) -> torch.Tensor:
    """C = σ_max(X)·U Vᵀ for token matrices ``x`` (..., N, D), in ``x``'s dtype.

    Computed in float32 or better with autocast off (``gram`` in float32 or float64, by the
    eigenvalue ratio). ``solver``: see the module docstring. Differentiable.
    """
    if solver not in TOKEN_SOLVERS:
        raise ValueError(f'unknown solver {solver!r}; valid: {TOKEN_SOLVERS}')
    solver = resolve_solver(solver, x.device)
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    with torch.autocast(x.device.type, enabled=False):
        if solver == 'svd':
            c = correction_svd(work)
        elif solver == 'gram':
            c = correction_gram(work)
        else:
            c = correction_newton_schulz(work, ns_iters)
    return c.to(x.dtype)


def condition_tokens(x: torch.Tensor,
                     solver: str = 'auto',
                     detach: bool = True,
                     ns_iters: int = 10,
                     strength: float = 1.0) -> torch.Tensor:
    """X + σ_max(X)·U Vᵀ per image, for ``x`` (B, N, D) (any leading dims); same shape/dtype.

    Args:
        solver: 'auto' (default: 'gram' on CPU, 'newton_schulz' on GPUs), 'gram', 'svd'
            or 'newton_schulz' (see the module docstring).
        detach: default True: C is a constant (the gradient w.r.t. x is the identity);
            False differentiates through the solver (svd/eigh gradients are not finite for
            repeated singular values, e.g. rank-deficient X; newton_schulz's always are).
        ns_iters: Newton-Schulz steps (Krylov vectors for σ_max: 4×), default 10.
        strength: α in [0, 1], default 1: X + α·C (a warm start; α = 0 returns ``x``).
    """
    if strength == 0:
        return x
    if detach:
        with torch.no_grad():
            c = token_correction(x.detach(), solver, ns_iters)
    else:
        c = token_correction(x, solver, ns_iters)
    return x + c if strength == 1 else x + strength * c


class TokenConditioner(nn.Module):
    """Conditions embedded tokens (B, N, D) -> (B, N, D); no parameters.

    Args:
        solver (str): 'auto' (default) | 'gram' | 'svd' | 'newton_schulz'.
        detach (bool): no gradient through the correction (default True).
        position (str): where the backbone applies it, 'before_pos_embed' (default) |
            'after_pos_embed'; stored for the backbone, unused here.
        ns_iters (int): Newton-Schulz steps (default 10).

    Attributes:
        rank_deficient (bool): the tokens have rank < D by construction (set by
            :func:`mmcondattn.conditioning.attach_token_conditioning` from the patch
            embedding): 'auto' is then 'svd' on every device. Default False.
        strength (float): α in [0, 1], default 1: X + α·C (set by a warm start).
    """

    def __init__(self,
                 solver: str = 'auto',
                 detach: bool = True,
                 position: str = 'before_pos_embed',
                 ns_iters: int = 10):
        super().__init__()
        self.cfg = parse_conditioning(
            dict(tokens=dict(solver=solver, detach=detach, position=position,
                             ns_iters=ns_iters))).tokens
        self.rank_deficient = False
        self.strength = 1.0

    @classmethod
    def from_cfg(cls, cfg) -> 'TokenConditioner':
        """Build from a TokensCfg or an options dict (``dict()`` = defaults)."""
        if not isinstance(cfg, TokensCfg):
            cfg = parse_conditioning(dict(tokens=cfg if cfg is not None else {})).tokens
        return cls(cfg.solver, cfg.detach, cfg.position, cfg.ns_iters)

    @property
    def position(self) -> str:
        return self.cfg.position

    @property
    def solver(self) -> str:
        """The configured solver, with 'auto' resolved for rank-deficient tokens ('svd');
        'auto' otherwise stays device-dependent (:func:`resolve_solver`)."""
        return 'svd' if self.cfg.solver == 'auto' and self.rank_deficient else self.cfg.solver

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return condition_tokens(x, self.solver, c.detach, c.ns_iters, self.strength)

    def extra_repr(self) -> str:
        c, solver = self.cfg, self.solver
        ns = f', ns_iters={c.ns_iters}' if solver in ('auto', 'newton_schulz') else ''
        why = ' (auto: rank-deficient tokens)' if solver != c.solver else ''
        strength = '' if self.strength == 1 else f', strength={self.strength:g}'
        return f'solver={solver}{why}, detach={c.detach}, position={c.position}{ns}{strength}'
