"""The fast path of :class:`~mmcondattn.conditioning.precond.PreconditionedLinear` (detached C,
full strength): the same values and gradients as ``F.linear(precondition(x), W, b)`` over the
(token, head) rows of x, in x's own memory order and without keeping an activation the stock
projection does not keep. ``tests/test_conditioning`` checks it equal to the reference
:func:`~mmcondattn.conditioning.precond.precondition`.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from . import precond  # row_scale: C's diagonal (precond imports this module back)
from .linear_grad import linear_backward

__all__ = ['project', 'PreconditionedProjection']

# The projection's input x (..., N, heads·d) comes in one of two memory orders: token-major
# (contiguous: MultiheadAttention, Swin) or channel-major, a view of a contiguous
# (..., heads, d, N) tensor (XCA's attn @ v, merged by a permute that copies nothing; F.linear
# then multiplies the transposed matrix as it is). The row scaling runs in x's own order, so
# that it reads and writes memory sequentially and hands F.linear the layout stock would.


def _rows(x: torch.Tensor, num_heads: int) -> Tuple[torch.Tensor, int]:
    """(rows, dim): x's (token, head) rows as a view in x's memory order and the dim of d:
    (..., N, heads, d), dim -1 (token-major), or (..., heads, d, N), dim -2 (channel-major)."""
    heads = x.unflatten(-1, (num_heads, -1))  # (..., N, heads, d)
    channels = heads.movedim(-3, -1)  # (..., heads, d, N)
    if not heads.is_contiguous() and channels.is_contiguous():
        return channels, -2
    return heads, -1


def _flat(x: torch.Tensor) -> bool:
    """Whether x (..., C) folds into (M, C) without a copy (what F.linear needs)."""
    dims = [i for i in range(x.dim() - 1) if x.shape[i] != 1]  # size-1 dims fold anyhow
    return all(x.stride(a) == x.shape[b] * x.stride(b) for a, b in zip(dims, dims[1:]))


def _scaled(x: torch.Tensor, rows: torch.Tensor, dim: int, c: torch.Tensor) -> torch.Tensor:
    """C·x (..., N, heads·d) from ``rows``/``dim`` of :func:`_rows` and C in the rows' layout,
    in one pass: channel-major stays so where F.linear takes it without a copy (one image),
    else C·x is written token-major, the copy F.linear would make of x (XCA, batch > 1)."""
    dtype = torch.promote_types(rows.dtype, c.dtype)
    if dim == -2 and _flat(x):
        return (rows * c).movedim(-1, -3).flatten(-2)  # (..., N, heads·d), channel-major
    if dim == -2:
        rows, c = rows.movedim(-1, -3), c.movedim(-1, -3)  # (..., N, heads, d), strided
    out = torch.empty(rows.shape, dtype=dtype, device=rows.device)
    return torch.mul(rows, c, out=out).flatten(-2)  # token-major


def project(x, weight, bias, num_heads: int, eps: float, scale: float) -> torch.Tensor:
    """y = (C·x) Wᵀ + b with C = row_scale of x's (token, head) rows, without autograd."""
    rows, dim = _rows(x, num_heads)
    return F.linear(_scaled(x, rows, dim, precond.row_scale(rows, eps, scale, dim)), weight, bias)


class PreconditionedProjection(torch.autograd.Function):
    """y = (C·x) Wᵀ + b over (token, head) rows of x (..., N, heads·d), C detached.

    Same values and gradients as ``F.linear(precondition(x), W, b)``, saving no activation
    the stock projection does not save (it saves x for W's gradient):

    * token-major x (a view of fused SDPA's output, which SDPA keeps): saves x and the small
      C (..., N, heads, 1), and recomputes C·x for W's gradient;
    * channel-major x (XCA: a view of attn @ v, which nothing else keeps): saves C·x in its
      place, so backward does not recompute it, and makes x's gradient in x's memory order.

    Backward: see :mod:`.linear_grad`; x's gradient is (grad_y W)·C, scaled in place.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, num_heads: int, eps: float, scale: float):
        rows, dim = _rows(x, num_heads)
        c = precond.row_scale(rows, eps, scale, dim)
        cx = _scaled(x, rows, dim, c)
        ctx.save_for_backward(x if dim == -1 else cx, weight, c)
        ctx.num_heads, ctx.dim = num_heads, dim
        ctx.flat = _flat(x)
        ctx.x_dtype, ctx.bias_dtype = x.dtype, None if bias is None else bias.dtype
        return F.linear(cx, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        saved, weight, c = ctx.saved_tensors
        needs, dim = ctx.needs_input_grad[:3], ctx.dim
        if dim == -1 and needs[1]:  # C·x, recomputed
            cx = _scaled(saved, *_rows(saved, ctx.num_heads), c)
        else:
            cx = saved if dim == -2 else None
        # channel-major x of one image: its gradient is made in x's order below, as the stock
        # projection's mm backward makes it (a token-major one costs attn @ v a copy)
        channel_major = needs[0] and dim == -2 and ctx.flat
        del saved
        grad_x, grad_w, grad_b = linear_backward(grad_y, cx, weight,
                                                 torch.promote_types(ctx.x_dtype, c.dtype),
                                                 (needs[0] and not channel_major, ) + needs[1:],
                                                 ctx.bias_dtype)
        if channel_major:  # (heads·d, N) = Wᵀ grad_yᵀ, scaled by C (..., heads, 1, N)
            grad_t = weight.to(grad_y.dtype).mT @ grad_y.reshape(-1, grad_y.shape[-1]).mT
            grad_x = grad_t.view(c.shape[:-2] + (-1, grad_t.shape[-1])).mul_(c)
            grad_x = grad_x.movedim(-1, -3).flatten(-2).to(ctx.x_dtype)
        elif grad_x is not None:  # (..., N, heads·d), token-major: scale by C (..., N, heads, 1)
            c = c.movedim(-1, -3).contiguous() if dim == -2 else c
            grad_x = grad_x.unflatten(-1, (ctx.num_heads, -1)).mul_(c).flatten(-2)
            grad_x = grad_x.to(ctx.x_dtype)
        return grad_x, grad_w, grad_b, None, None, None
