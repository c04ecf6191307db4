"""Method 1, preconditioned attention: a diagonal row equilibrator on each head's output.

O_h ← C_h O_h with C_h = diag(scale / (‖(O_h)_i‖₂ + eps)), per head and token, before the
heads are merged and projected (adopted reading, see docs/methods.md).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._precond_kernel import PreconditionedProjection, project
from .linear_grad import needs_autograd
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
        """F.linear(precondition(x per (token, head) row), W, b): x (..., N, heads·d)."""
        p = self.precond
        if self.strength == 0:  # a warm start's first step: the stock projection
            return F.linear(x, self.weight, self.bias)
        if p.detach and self.strength == 1:  # the fast path: ._precond_kernel (same values)
            args = (x, self.weight, self.bias, self.num_heads, p.eps, p.scale)
            if needs_autograd(*args[:3]):
                return PreconditionedProjection.apply(*args)
            return project(*args)  # nothing to differentiate: no autograd.Function
        heads = x.unflatten(-1, (self.num_heads, -1))  # (..., N, heads, d)
        x = precondition(heads, p.eps, p.scale, p.detach, self.strength)
        x = x.flatten(-2)  # (..., N, heads·d)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        p = self.precond
        strength = '' if self.strength == 1 else f', strength={self.strength:g}'
        return (f'{super().extra_repr()}, num_heads={self.num_heads}, precond: eps={p.eps}, '
                f'scale={p.scale}, detach={p.detach}{strength}')
