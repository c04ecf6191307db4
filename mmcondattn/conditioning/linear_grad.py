"""The backward of y = x Wᵀ + b, shared by the autograd Functions of the conditioned Linears.

Those Functions (``precond.py``, ``spectral.py``) add an elementwise term to a Linear and
write its backward by hand, so that autograd keeps no extra activation (precond) and makes
no copy of the output's gradient (spectral, whose in-place add on a view would otherwise
clone it). The matmuls run in the dtype of the output's gradient (autocast's dtype when the
forward ran under autocast); each gradient is returned in its input's dtype.
"""
from typing import Optional, Sequence, Tuple

import torch

__all__ = ['needs_autograd', 'linear_backward']


def needs_autograd(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a Function over ``tensors`` must record a backward (else: call its forward
    math directly and skip the autograd.Function overhead)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def linear_backward(grad_y: torch.Tensor, x_for_weight: Optional[torch.Tensor],
                    weight: torch.Tensor, x_dtype: torch.dtype, needs: Sequence[bool],
                    bias_dtype: Optional[torch.dtype]) -> Tuple[Optional[torch.Tensor], ...]:
    """(grad_x, grad_w, grad_b) of y = x Wᵀ + b, with None where ``needs`` (x, W, b) is False
    or there is no bias (``bias_dtype`` None).

    Args:
        grad_y: (..., out). x_for_weight: (..., in), the input W's gradient is taken against
            (may be None when W needs no gradient); it is dropped before grad_x is made, so
            a recomputed input does not outlive its use. weight: (out, in).
    """
    dtype = grad_y.dtype
    rows = grad_y.reshape(-1, grad_y.shape[-1])  # (M, out), M = all leading dims
    grad_w = grad_b = grad_x = None
    if needs[1]:  # (out, in); no name is bound to the flattened input, so `del` frees it
        grad_w = rows.mT.matmul(x_for_weight.reshape(-1, x_for_weight.shape[-1]).to(dtype)).to(
            weight.dtype)
    del x_for_weight
    if needs[2] and bias_dtype is not None:
        grad_b = rows.sum(0).to(bias_dtype)
    if needs[0]:
        grad_x = grad_y.matmul(weight.to(dtype)).to(x_dtype)  # (..., in), a fresh tensor
    return grad_x, grad_w, grad_b
