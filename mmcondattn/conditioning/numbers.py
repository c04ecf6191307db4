"""Condition numbers, smallest singular values and attention entropy (measurement only).

All functions work on batched tensors and never build a graph (they run under ``no_grad``).
"""
from typing import Optional

import torch

__all__ = ['singular_values', 'condition_number', 'min_singular_value', 'attention_entropy']


@torch.no_grad()
def singular_values(m: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Singular values of ``m`` (..., r, c) over its last two dims, descending.

    Returns (..., min(r, c)) in ``dtype`` (default float64; float32 is faster and good to
    κ ≈ 1e6). Autocast is disabled inside.
    """
    with torch.autocast(m.device.type, enabled=False):
        return torch.linalg.svdvals(m.detach().to(dtype))


def _default_floor(m: torch.Tensor, dtype: torch.dtype) -> float:
    # numpy.linalg.matrix_rank's tolerance: eps * max(r, c), relative to σ_max
    return torch.finfo(dtype).eps * max(m.shape[-2:])


@torch.no_grad()
def condition_number(m: torch.Tensor,
                     floor: Optional[float] = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """κ(m) = σ_max / σ_min over the min(r, c) singular values of ``m`` (..., r, c).

    Args:
        m: batched matrices (..., r, c); any float dtype (cast to ``dtype``).
        floor: relative floor on σ_min: κ is computed as σ_max / max(σ_min, floor·σ_max),
            so it never exceeds ``1 / floor``. Default None: ``eps(dtype) · max(r, c)``
            (numpy's rank tolerance; about 1e13 for a 384-wide float64 matrix).
        dtype: precision of the SVD (default float64).

    Returns:
        κ of shape ``m.shape[:-2]``, in ``dtype``; always finite. A value equal to
        ``1 / floor`` means "numerically singular at this floor" (the zero matrix included).
    """
    floor = _default_floor(m, dtype) if floor is None else float(floor)
    if not floor > 0:
        raise ValueError(f'floor must be > 0, got {floor}')
    s = singular_values(m, dtype)
    smax, smin = s[..., 0], s[..., -1]
    kappa = smax / torch.maximum(smin, floor * smax)
    return torch.where(smax > 0, kappa, torch.full_like(kappa, 1.0 / floor))


@torch.no_grad()
def min_singular_value(m: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """σ_min of ``m`` (..., r, c) over the min(r, c) singular values; shape ``m.shape[:-2]``."""
    return singular_values(m, dtype)[..., -1]


@torch.no_grad()
def attention_entropy(attn: torch.Tensor, reduction: str = 'mean') -> torch.Tensor:
    """Shannon entropy (nats) of attention rows ``attn`` (..., rows, keys).

    Each row is a probability distribution over the last dim (0·log 0 = 0). The uniform
    distribution over n keys gives log(n).

    Args:
        attn: (..., rows, keys), e.g. (B, heads, N, N).
        reduction: ``'mean'`` (default): mean over rows, shape ``attn.shape[:-2]``, e.g.
            (B, heads); ``'none'``: per row, shape ``attn.shape[:-1]``.
    """
    if reduction not in ('mean', 'none'):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    with torch.autocast(attn.device.type, enabled=False):
        p = attn.detach().float()
        ent = -torch.special.xlogy(p, p).sum(-1)  # (..., rows)
    return ent.mean(-1) if reduction == 'mean' else ent
