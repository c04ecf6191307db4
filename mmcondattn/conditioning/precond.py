"""Method 1, preconditioned attention: a diagonal row equilibrator on each head's output.

O_h ← C_h O_h with C_h = diag(scale / (‖(O_h)_i‖₂ + eps)), per head and token, before the
heads are merged and projected (adopted reading, see docs/methods.md).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear_grad import linear_backward, needs_autograd
from .options import PrecondCfg, parse_conditioning

__all__ = ['row_scale', 'precondition', 'PreconditionedLinear']


def row_scale(out: torch.Tensor, eps: float = 1e-6, scale: float = 1.0) -> torch.Tensor:
    """The diagonal of C for ``out`` (..., N, d): scale / (‖row_i‖₂ + eps), shape (..., N, 1).

    Norms are computed in float32 at least (also for fp16/bf16 inputs under autocast;
    float64 stays float64); C is then cast to ``out``'s dtype.
    """
    acc = torch.promote_types(out.dtype, torch.float32)
    norm = torch.linalg.vector_norm(out, dim=-1, keepdim=True, dtype=acc)
    c = scale / (norm + eps)  # (..., N, 1)
    if out.dtype != acc:
        # fp16 cannot hold scale / eps: clamp so that a near-zero row gives 0 · max, not 0 · inf
        c = c.clamp(max=torch.finfo(out.dtype).max).to(out.dtype)
    return c


def precondition(out: torch.Tensor,
                 eps: float = 1e-6,
                 scale: float = 1.0,
                 detach: bool = True) -> torch.Tensor:
    """Scale every row of ``out`` (..., N, d) to norm ``scale``: returns C·out.

    C = diag(scale / (‖row_i‖₂ + eps)) (see :func:`row_scale`); the result keeps ``out``'s
    dtype. ``detach`` (default True): no gradient through C. An all-zero row stays zero.
    This is the reference implementation of method 1.
    """
    return out * row_scale(out.detach() if detach else out, eps, scale)


def _scaled_heads(x: torch.Tensor, c: torch.Tensor, num_heads: int) -> torch.Tensor:
    """C·x for x (..., N, heads·d) and C (..., N, heads, 1), written contiguously in one pass
    (x may be a strided view, e.g. XCA's permuted output; F.linear would copy it again)."""
    heads = x.unflatten(-1, (num_heads, -1))  # (..., N, heads, d)
    out = torch.empty(
        heads.shape, dtype=torch.promote_types(heads.dtype, c.dtype), device=heads.device)
    return torch.mul(heads, c, out=out).flatten(-2)


def _project(x, weight, bias, num_heads: int, eps: float, scale: float):
    """(y, C): y = (C·x) Wᵀ + b with C = row_scale of x's (token, head) rows, no autograd."""
    c = row_scale(x.unflatten(-1, (num_heads, -1)), eps, scale)  # (..., N, heads, 1)
    return F.linear(_scaled_heads(x, c, num_heads), weight, bias), c


class _PreconditionedProjection(torch.autograd.Function):
    """y = (C·x) Wᵀ + b over (token, head) rows of x (..., N, heads·d), C detached.

    Same values and gradients as ``F.linear(precondition(x), W, b)``, but it saves x and
    the small C (..., N, heads, 1) instead of C·x, and recomputes C·x for W's gradient:
    where x is already kept by the layer before (fused SDPA keeps its output, of which x
    is a view), the projection adds no activation of its own. Backward: see
    :mod:`.linear_grad`; x's gradient is (grad_y W)·C, scaled in place.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, num_heads: int, eps: float, scale: float):
        y, c = _project(x, weight, bias, num_heads, eps, scale)
        ctx.save_for_backward(x, weight, c)
        ctx.num_heads = num_heads
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, weight, c = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        h = ctx.num_heads
        grad_x, grad_w, grad_b = linear_backward(
            grad_y,
            _scaled_heads(x, c, h) if needs[1] else None,  # C·x, recomputed
            weight,
            torch.promote_types(x.dtype, c.dtype),
            needs,
            ctx.bias_dtype)
        if grad_x is not None:
            grad_x = grad_x.unflatten(-1, (h, -1)).mul_(c).flatten(-2).to(x.dtype)
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
        if p.detach:  # the default: saves x, not C·x (see _PreconditionedProjection)
            args = (x, self.weight, self.bias, self.num_heads, p.eps, p.scale)
            if needs_autograd(*args[:3]):
                return _PreconditionedProjection.apply(*args)
            return _project(*args)[0]  # nothing to differentiate: no autograd.Function
        heads = x.unflatten(-1, (self.num_heads, -1))  # (..., N, heads, d)
        x = precondition(heads, p.eps, p.scale, p.detach).flatten(-2)  # (..., N, heads·d)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        p = self.precond
        return (f'{super().extra_repr()}, num_heads={self.num_heads}, precond: eps={p.eps}, '
                f'scale={p.scale}, detach={p.detach}')
