"""The solvers of method 3 (conditioned embedded tokens): C = σ_max(X)·U Vᵀ per image, U Vᵀ the
polar factor of X (..., N, D). :func:`mmcondattn.conditioning.tokens.token_correction` picks
one; the method and its solver table are in :mod:`.tokens`' docstring and docs/methods.md.

Each ``correction_*`` takes float32 or float64 X with autocast off and returns C in X's dtype;
every one is finite for degenerate X (all zeros, rank 1). The fallbacks are data-dependent;
under ``torch.compile`` they run through ``torch.cond`` (no graph break).
"""
from typing import Callable

import torch

__all__ = [
    'correction_svd', 'correction_gram', 'correction_newton_schulz', 'resolve_solver',
    'ns_schedule', 'GRAM_MIN_EIG_RATIO', 'GRAM32_MIN_EIG_RATIO', 'GRAM32_RESOLVED_EIG_RATIO',
    'NS_TOL'
]

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


def correction_svd(x: torch.Tensor) -> torch.Tensor:
    """Exact, also for rank-deficient X (the SVD completes the singular vectors)."""
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


def correction_gram64(x: torch.Tensor) -> torch.Tensor:
    """The Gram route in float64; images below GRAM_MIN_EIG_RATIO go to svd."""
    x64 = x.to(torch.float64)
    lam, q, ratio = _gram_eig(x64)
    c = _gram_apply(x64, lam, q).to(x.dtype)
    return _redo(ratio <= GRAM_MIN_EIG_RATIO, c, x, correction_svd)


def correction_gram(x: torch.Tensor) -> torch.Tensor:
    """float32 eigh; where its ratio is below 1e-3: float64 (>= 1e-6) or svd."""
    if x.dtype == torch.float64:
        return correction_gram64(x)
    lam, q, ratio = _gram_eig(x)
    deficient = ratio < GRAM32_RESOLVED_EIG_RATIO
    low = ~deficient & (ratio < GRAM32_MIN_EIG_RATIO)
    if _is_compiling() or not bool((deficient | low).all()):
        c = _gram_apply(x, lam, q)
    else:  # no image keeps the float32 result
        c = torch.zeros_like(x)
    c = _redo(deficient, c, x, correction_svd)
    return _redo(low, c, x, correction_gram64)


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


def correction_newton_schulz(x: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` quintic steps, checked per image; failures (‖YᵀY − I‖ > NS_TOL) go to svd."""
    smax, y, err = _newton_schulz_polar(x, iters)
    return _redo(~(err <= NS_TOL), smax * y, x, correction_svd)  # NaN err fails too


def resolve_solver(solver: str, device: torch.device) -> str:
    """The solver ``solver`` means on ``device``: 'auto' is 'gram' on CPU, else
    'newton_schulz'; the others are themselves."""
    if solver == 'auto':
        return 'gram' if torch.device(device).type == 'cpu' else 'newton_schulz'
    return solver
