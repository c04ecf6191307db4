"""Method 1, preconditioned attention: a diagonal row equilibrator on each head's output.

O_h ← C_h O_h with C_h = diag(scale / (‖(O_h)_i‖₂ + eps)), per head and token, before the
heads are merged and projected (adopted reading, see docs/methods.md).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear_grad import linear_backward, needs_autograd
from .options import PrecondCfg, parse_conditioning

__all__ = ['row_scale', 'precondition', 'PreconditionedLinear']


def _row_norm(out: torch.Tensor, dim: int, acc: torch.dtype) -> torch.Tensor:
    """‖·‖₂ over ``dim`` (keepdim) in ``acc``. Over a dim that is not the innermost in memory
    (XCA's (B, heads, d, N)) ``vector_norm`` is 20-30× slower on CPU than a sum of squares."""
    if out.stride(dim) == 1 or out.shape[dim] == 1:
        return torch.linalg.vector_norm(out, dim=dim, keepdim=True, dtype=acc)
    return out.to(acc).square().sum(dim, keepdim=True).sqrt()


def row_scale(out: torch.Tensor,
              eps: float = 1e-6,
              scale: float = 1.0,
              dim: int = -1) -> torch.Tensor:
    """The diagonal of C for ``out`` (..., N, d): scale / (‖row_i‖₂ + eps), shape (..., N, 1).

    ``dim``: the dim of the row's d entries (default -1; the result has size 1 there).
    Norms are computed in float32 at least (also for fp16/bf16 inputs under autocast;
    float64 stays float64); C is then cast to ``out``'s dtype.
    """
    acc = torch.promote_types(out.dtype, torch.float32)
    c = scale / (_row_norm(out, dim, acc) + eps)  # (..., N, 1)
    if out.dtype != acc:
        # fp16 cannot hold scale / eps: clamp so that a near-zero row gives 0 · max, not 0 · inf
        c = c.clamp(max=torch.finfo(out.dtype).max).to(out.dtype)
    return c


def precondition(out: torch.Tensor,
                 eps: float = 1e-6,
                 scale: float = 1.0,
                 detach: bool = True,
                 strength: float = 1.0) -> torch.Tensor:
    """Scale every row of ``out`` (..., N, d) to norm ``scale``: returns C·out.

    C = diag(scale / (‖row_i‖₂ + eps)) (see :func:`row_scale`); the result keeps ``out``'s
    dtype. ``detach`` (default True): no gradient through C. An all-zero row stays zero.
    ``strength`` α in [0, 1] (default 1): ((1 − α)·I + α·C)·out, still a diagonal (the warm
    start, :mod:`.state`). This is the reference implementation of method 1.
    """
    c = row_scale(out.detach() if detach else out, eps, scale)  # (..., N, 1)
    if strength != 1:
        c = c * strength + (1 - strength)
    return out * c


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


def _project(x, weight, bias, num_heads: int, eps: float, scale: float) -> torch.Tensor:
    """y = (C·x) Wᵀ + b with C = row_scale of x's (token, head) rows, without autograd."""
    rows, dim = _rows(x, num_heads)
    return F.linear(_scaled(x, rows, dim, row_scale(rows, eps, scale, dim)), weight, bias)


class _PreconditionedProjection(torch.autograd.Function):
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
        c = row_scale(rows, eps, scale, dim)
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


class PreconditionedLinear(nn.Linear):
    """The output projection of an attention layer, preconditioning its input heads first.

    Its input (..., N, heads·d) is the merged head outputs; it is viewed as (..., N, heads, d)
    and each (token, head) row of d channels is scaled by :func:`precondition`, which is the
    same row scaling as on (B, heads, N, d) before the merge (row scaling commutes with the
    transpose), so fused SDPA kernels stay in use. Parameters and state-dict keys are those of
    ``nn.Linear`` (``weight``, ``bias``).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        num_heads (int): heads merged in the input; ``in_features % num_heads == 0``.
        precond (PrecondCfg | dict | None): options (default: PrecondCfg()).
        device, dtype: as ``nn.Linear``.

    Attributes:
        strength (float): α in [0, 1], default 1 (the method); set by a warm start
            (:mod:`.state`): α = 0 is the stock projection.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 num_heads: int = 1,
                 precond: Optional[PrecondCfg] = None,
                 device=None,
                 dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if in_features % num_heads:
            raise ValueError(f'in_features {in_features} is not divisible by '
                             f'num_heads {num_heads}')
        self.num_heads = num_heads
        if not isinstance(precond, PrecondCfg):
            precond = parse_conditioning(dict(precond=precond or {})).precond
        self.precond = precond
        self.strength = 1.0

    @classmethod
    def from_linear(cls,
                    linear: nn.Linear,
                    num_heads: int,
                    precond: Optional[PrecondCfg] = None) -> 'PreconditionedLinear':
        """A PreconditionedLinear sharing ``linear``'s weight and bias Parameters."""
        new = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            num_heads,
            precond,
            device='meta',
            dtype=linear.weight.dtype)
        new.weight, new.bias = linear.weight, linear.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.precond
        if self.strength == 0:  # a warm start's first step: the stock projection
            return F.linear(x, self.weight, self.bias)
        if p.detach and self.strength == 1:  # default: saves x, not C·x (_PreconditionedProjection)
            args = (x, self.weight, self.bias, self.num_heads, p.eps, p.scale)
            if needs_autograd(*args[:3]):
                return _PreconditionedProjection.apply(*args)
            return _project(*args)  # nothing to differentiate: no autograd.Function
        heads = x.unflatten(-1, (self.num_heads, -1))  # (..., N, heads, d)
        x = precondition(heads, p.eps, p.scale, p.detach, self.strength)
        x = x.flatten(-2)  # (..., N, heads·d)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        p = self.precond
        strength = '' if self.strength == 1 else f', strength={self.strength:g}'
        return (f'{super().extra_repr()}, num_heads={self.num_heads}, precond: eps={p.eps}, '
                f'scale={p.scale}, detach={p.detach}{strength}')
