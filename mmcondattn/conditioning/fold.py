"""Folding spectral corrections into the weights: W ← W + C, same function, no overhead."""
import dataclasses

import torch.nn as nn

from .options import ConditioningConfig
from .spectral import SpectralLinear
from .state import ConditioningState

__all__ = ['fold_conditioning']


def fold_conditioning(model: nn.Module) -> nn.Module:
    """Replace every :class:`SpectralLinear` in ``model`` by its folded ``nn.Linear``, in place.

    The folded model computes the same function (up to float rounding of W + α·C, α the
    layer's ``strength``: 1 unless a warm start is under way) with stock state-dict keys (no
    ``*.correction`` buffers). Modules that record their conditioning in a ``conditioning``
    attribute (the conditioned attention layers) and the model's ``conditioning_state`` record
    get ``spectral=None`` there.
    Returns ``model`` (or the folded Linear if ``model`` itself is a SpectralLinear).
    """
    if isinstance(model, SpectralLinear):
        return model.folded()
    for parent in list(model.modules()):
        folded = False
        for name, child in list(parent.named_children()):
            if isinstance(child, SpectralLinear):
                setattr(parent, name, child.folded())
                folded = True
        cfg = getattr(parent, 'conditioning', None)
        if folded and isinstance(cfg, ConditioningConfig):
            parent.conditioning = dataclasses.replace(cfg, spectral=None)
    for state in [m for m in model.modules() if isinstance(m, ConditioningState)]:
        state.forget('spectral')
    return model
