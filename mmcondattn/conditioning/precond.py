"""Method 1, preconditioned attention: a diagonal row equilibrator on each head's output.

O_h ← C_h O_h with C_h = diag(scale / (‖(O_h)_i‖₂ + eps)), per head and token, before the
heads are merged and projected (adopted reading, see docs and METHODS.md §1).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .options import PrecondCfg, parse_conditioning

__all__ = ['precondition', 'PreconditionedLinear']


def precondition(out: torch.Tensor,
                 eps: float = 1e-6,
                 scale: float = 1.0,
                 detach: bool = True) -> torch.Tensor:
    """Scale every row of ``out`` (..., N, d) to norm ``scale``: returns C·out.

    C = diag(scale / (‖row_i‖₂ + eps)). Norms are computed in float32 (also for fp16/bf16
    inputs under autocast); the result keeps ``out``'s dtype. ``detach`` (default True):
    no gradient through C. An all-zero row stays zero.
    """
    norm = torch.linalg.vector_norm(out, dim=-1, keepdim=True, dtype=torch.float32)  # (..., N, 1)
    if detach:
        norm = norm.detach()
    c = scale / (norm + eps)  # (..., N, 1) float32
    if out.dtype != torch.float32:
        # fp16 cannot hold scale / eps: clamp so that a near-zero row gives 0 · max, not 0 · inf
        c = c.clamp(max=torch.finfo(out.dtype).max).to(out.dtype)
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
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 num_heads: int = 1, precond: Optional[PrecondCfg] = None, **factory):
        super().__init__(in_features, out_features, bias, **factory)
        self._configure(num_heads, precond)

    def _configure(self, num_heads: int, precond) -> None:
        if self.in_features % num_heads:
            raise ValueError(f'in_features {self.in_features} is not divisible by '
                             f'num_heads {num_heads}')
        self.num_heads = num_heads
        if not isinstance(precond, PrecondCfg):
            precond = parse_conditioning(dict(precond=precond or {})).precond
        self.precond = precond

    @classmethod
    def from_linear(cls, linear: nn.Linear, num_heads: int,
                    precond: Optional[PrecondCfg] = None) -> 'PreconditionedLinear':
        """A PreconditionedLinear sharing ``linear``'s weight and bias Parameters."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new._configure(num_heads, precond)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.precond
        heads = x.unflatten(-1, (self.num_heads, -1))  # (..., N, heads, d)
        x = precondition(heads, p.eps, p.scale, p.detach).flatten(-2)  # (..., N, heads·d)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        p = self.precond
        return (f'{super().extra_repr()}, num_heads={self.num_heads}, precond: eps={p.eps}, '
                f'scale={p.scale}, detach={p.detach}')
