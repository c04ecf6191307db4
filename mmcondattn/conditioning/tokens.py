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
from typing import Callable

import torch
import torch.nn as nn

from .options import TOKEN_SOLVERS, TokensCfg, parse_conditioning

__all__ = ['token_correction', 'condition_tokens', 'TokenConditioner', 'resolve_solver']

# the float64 Gram route keeps κ(X + C) <= 2 while λ_min(G) / λ_max(G) = 1 / κ(X)² >= 1e-12
# (measured at 196×384, 1024×96, 4200×384: κ(X + C) = 2.0000 at κ(X) = 1e6, 2.9-5.8 at 1e7)
GRAM_MIN_EIG_RATIO = 1e-12
# the float32 route where the ratio float32 finds is >= 1e-3 (κ(X) <= 31); measured
# (docs/performance.md): κ(X + C) - 2/(1 + 1/κ(X)) <= 1e-4 up to κ(X) = 300 at 196..16384 × 96..384
GRAM32_MIN_EIG_RATIO = 1e-3
# below this the float32 ratio is rounding noise (it reads ±1e-8 for κ(X) = 1e4 and for
# rank-deficient X; 1e-6 within 5 % at κ(X) = 1e3): those images go to svd directly
GRAM32_RESOLVED_EIG_RATIO = 1e-6
# newton_schulz: images with ‖YᵀY − I‖_∞ above this go to svd; below it κ(X + C) <=
# (1 + √(1 + tol)) / √(1 − tol) = 2.0075 (given σ_max)
NS_TOL = 5e-3
# quintic coefficients (a, b, c): growth 3.44 for small singular values, mapping [0, 1.05]
# into [0.68, 1.13]; then Newton's iteration for U Vᵀ, cubically convergent
NS_GROW = (3.4445, -4.7750, 2.0315)
NS_NEWTON = (15 / 8, -10 / 8, 3 / 8)
NS_NEWTON_STEPS = 3


def _tall(x: torch.Tensor) -> bool:
    return x.shape[-2] >= x.shape[-1]  # N >= D: work with the D×D side


def _is_compiling() -> bool:
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_compiling'):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()


def _redo(bad: torch.Tensor, c: torch.Tensor, x: torch.Tensor,
          solver: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``c`` (..., N, D) with the images where ``bad`` (...) is True recomputed by ``solver``
    from ``x``. Eager: only those images; compiled: ``torch.cond`` (no graph break), which
    runs ``solver`` on the batch if any needs it."""
    if _is_compiling() and hasattr(torch, 'cond'):
        # both branches contiguous (LAPACK's results are column-major; cond wants one layout)
        return torch.cond(
            bad.any(),
            lambda c, x, bad: torch.where(bad[..., None, None], solver(x), c).contiguous(),
            lambda c, x, bad: c.contiguous().clone(), (c, x, bad))
    if bad.dim() == 0:  # one matrix
        return solver(x) if bad else c
    if bad.any():
        c = c.index_put((bad, ), solver(x[bad]))
    return c


def _correction_svd(x: torch.Tensor) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(x, full_matrices=False)  # (.., N, k), (.., k), (.., k, D)
    return s[..., :1, None] * (u @ vh)  # (..., N, D)


def _gram_eig(x: torch.Tensor):
    """(lam, q, ratio): eigh of the smaller Gram matrix of x (..., N, D) in x's dtype,
    ascending σ_i² (..., k) and vectors (..., k, k), and λ_min / λ_max (...)."""
    lam, q = torch.linalg.eigh(x.mT @ x if _tall(x) else x @ x.mT)
    return lam, q, lam[..., 0] / lam[..., -1].clamp(min=torch.finfo(x.dtype).tiny)


def _gram_apply(x: torch.Tensor, lam: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """σ_max X G^(-1/2) (G^(-1/2) X when N < D) from :func:`_gram_eig`: (..., N, D)."""
    lmax = lam[..., -1:].clamp(min=0)  # (..., 1)
    # floor tiny/negative eigenvalues (rank tolerance; tiny keeps the zero matrix finite)
    floor = (lmax * torch.finfo(x.dtype).eps * lam.shape[-1]).clamp(min=torch.finfo(x.dtype).tiny)
    m = (q * (lmax.sqrt() * torch.maximum(lam, floor).rsqrt()).unsqueeze(-2)) @ q.mT
    return x @ m if _tall(x) else m @ x


def _correction_gram64(x: torch.Tensor) -> torch.Tensor:
    x64 = x.to(torch.float64)
    lam, q, ratio = _gram_eig(x64)
    c = _gram_apply(x64, lam, q).to(x.dtype)
    return _redo(ratio <= GRAM_MIN_EIG_RATIO, c, x, _correction_svd)


def _correction_gram(x: torch.Tensor) -> torch.Tensor:
    """float32 eigh; where its ratio is below 1e-3: float64 (>= 1e-6) or svd."""
    if x.dtype == torch.float64:
        return _correction_gram64(x)
    lam, q, ratio = _gram_eig(x)
    deficient = ratio < GRAM32_RESOLVED_EIG_RATIO
    low = ~deficient & (ratio < GRAM32_MIN_EIG_RATIO)
    if _is_compiling() or not bool((deficient | low).all()):
        c = _gram_apply(x, lam, q)
    else:  # no image keeps the float32 result
        c = torch.zeros_like(x)
    c = _redo(deficient, c, x, _correction_svd)
    return _redo(low, c, x, _correction_gram64)


def _lambda_max(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Largest eigenvalue (..., 1, 1) of the PSD matrices ``g`` (..., k, k): Rayleigh-Ritz on
    the Krylov space of ``steps`` vectors from the column of largest diagonal entry (Lanczos
    without its recurrence), far closer than as many power iterations where the top
    eigenvalues are close (σ_max then sets κ(X + C) - 2 within its relative error)."""
    j = g.diagonal(dim1=-2, dim2=-1).argmax(-1)  # (...)
    v = torch.take_along_dim(g, j[..., None, None], dim=-1)  # (..., k, 1)
    tiny = torch.finfo(g.dtype).tiny
    basis = []
    for _ in range(min(steps, g.shape[-1])):
        v = v / v.norm(dim=-2, keepdim=True).clamp(min=tiny)
        basis.append(v)
        v = g @ v
    q = torch.linalg.qr(torch.cat(basis, -1))[0]  # (..., k, steps), orthonormal
    return torch.linalg.eigvalsh(q.mT @ g @ q)[..., -1:, None]


def ns_schedule(iters: int):
    """The (a, b, c) of each of ``iters`` quintic Newton-Schulz steps."""
    newton = min(iters, NS_NEWTON_STEPS)
    return [NS_GROW] * (iters - newton) + [NS_NEWTON] * newton


def _newton_schulz_polar(x: torch.Tensor, iters: int):
    """(σ_max, Y, err): Y ≈ U Vᵀ (..., N, D) by :func:`ns_schedule`, σ_max (..., 1, 1) by
    :func:`_lambda_max` (4·iters vectors), err (...) = ‖YᵀY − I‖_∞ (YYᵀ when N < D)."""
    tall, tiny = _tall(x), torch.finfo(x.dtype).tiny
    gram = (lambda y: y.mT @ y) if tall else (lambda y: y @ y.mT)  # (..., k, k)
    smax = _lambda_max(gram(x), 4 * iters).clamp(min=0).sqrt().clamp(min=tiny)
    y = x / smax  # singular values in [0, ~1]
    for a, b, c in ns_schedule(iters):
        s = gram(y)
        m = b * s + c * (s @ s)
        y = a * y + (y @ m if tall else m @ y)
    eye = torch.eye(y.shape[-1] if tall else y.shape[-2], dtype=y.dtype, device=y.device)
    err = (gram(y) - eye).abs().sum(-1).amax(-1)
    return smax, y, err


def _correction_newton_schulz(x: torch.Tensor, iters: int) -> torch.Tensor:
    smax, y, err = _newton_schulz_polar(x, iters)
    return _redo(~(err <= NS_TOL), smax * y, x, _correction_svd)  # NaN err fails too


def resolve_solver(solver: str, device: torch.device) -> str:
    """The solver ``solver`` means on ``device``: 'auto' is 'gram' on CPU, else
    'newton_schulz'; the others are themselves."""
    if solver == 'auto':
        return 'gram' if torch.device(device).type == 'cpu' else 'newton_schulz'
    return solver


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
            c = _correction_svd(work)
        elif solver == 'gram':
            c = _correction_gram(work)
        else:
            c = _correction_newton_schulz(work, ns_iters)
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
