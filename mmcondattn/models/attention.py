"""Conditioned attention layers: the stock mmpretrain / mmdet layers plus ``conditioning``.

Conditioning an attention layer replaces two children with conditioned Linears that share
their Parameters (state-dict keys unchanged, spectral adds ``qkv.correction``); the class and
the forward stay stock (:func:`mmcondattn.conditioning.condition_attention_layer`):

* spectral: ``qkv`` → :class:`~mmcondattn.conditioning.SpectralLinear` (W + C);
* precond: ``proj`` → :class:`~mmcondattn.conditioning.PreconditionedLinear`, which scales each
  (token, head) row of the merged head outputs before projecting. Every stock forward here
  merges the heads with a transpose/reshape and calls ``proj`` right away, so this is the
  per-head preconditioning of docs/methods.md (after fused SDPA in MultiheadAttention, after
  the masked softmax and ``attn @ v`` per window in Swin, on the token rows of XCA's
  (B, heads, d, N) output).

The four stock classes are registered in the adapter table of
:func:`mmcondattn.condition_model`; the ``Conditioned*`` classes are the same layers with a
``conditioning`` argument, for configs that build layers. Token conditioning is not a layer
matter: backbones apply ``TokenConditioner`` after the patch embedding.

:func:`record_attention` and :func:`attention_layers` live in :mod:`mmcondattn.measure`
(torch alone) and are re-exported here; this module adds the one OpenMMLab-specific piece
they use, how to form A from a fused-SDPA ``MultiheadAttention``'s qkv output.
"""
from functools import partial

import torch
import torch.nn as nn
from mmdet.models.backbones.swin import WindowMSA as DetWindowMSA
from mmdet.registry import MODELS as MMDET_MODELS
from mmpretrain.models.backbones.xcit import XCA
from mmpretrain.models.utils.attention import MultiheadAttention, WindowMSA
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from ..conditioning import condition_attention, parse_conditioning
from ..conditioning.model import AttentionAdapter, condition_attention_layer, register_attention
from ..measure import attention_layers, record_attention  # torch-only; re-exported here

__all__ = [
    'ConditionedMultiheadAttention', 'ConditionedWindowMSA', 'ConditionedDetWindowMSA',
    'ConditionedXCA', 'condition_attention_modules', 'record_attention', 'attention_layers'
]


def _register(cls):
    """Register ``cls`` in mmdet's and mmpretrain's MODELS (configs build from either)."""
    MMDET_MODELS.register_module(module=cls)
    MMPRETRAIN_MODELS.register_module(module=cls)
    return cls


class ConditionedAttentionMixin:
    """Adds ``conditioning`` (dict | ConditioningConfig | None, default None) to a stock
    attention layer; the parsed config is kept in ``self.conditioning``."""

    def __init__(self, *args, conditioning=None, **kwargs):
        super().__init__(*args, **kwargs)
        condition_attention_layer(self, parse_conditioning(conditioning))


@_register
class ConditionedMultiheadAttention(ConditionedAttentionMixin, MultiheadAttention):
    """mmpretrain ``MultiheadAttention`` (ViT, DeiT) with ``conditioning``; other args as
    the stock layer. The fused ``F.scaled_dot_product_attention`` path is kept."""


@_register
class ConditionedWindowMSA(ConditionedAttentionMixin, WindowMSA):
    """mmpretrain ``WindowMSA`` (Swin) with ``conditioning``; other args as the stock layer.
    Pass it as ``ShiftWindowMSA(window_msa=...)`` or condition a built model."""


@_register
class ConditionedDetWindowMSA(ConditionedAttentionMixin, DetWindowMSA):
    """mmdet ``WindowMSA`` (mmdet's Swin) with ``conditioning``; other args as stock."""


@_register
class ConditionedXCA(ConditionedAttentionMixin, XCA):
    """mmpretrain ``XCA`` (XCiT cross-covariance attention) with ``conditioning``; other
    args as the stock layer."""


def condition_attention_modules(model: nn.Module, conditioning) -> int:
    """Condition, in place, every supported attention layer of ``model`` (same classes and
    Parameters; :func:`mmcondattn.conditioning.condition_attention`). Returns how many."""
    return condition_attention(model, conditioning)


def _mha_attention(m: MultiheadAttention, qkv: torch.Tensor) -> torch.Tensor:
    """Explicit A (B, heads, N, N) of a MultiheadAttention from its qkv output (B, N, 3D);
    the stock forward never forms it (fused SDPA). Dropout is not applied."""
    q, k, _ = qkv.unflatten(-1, (3, m.num_heads, m.head_dims)).permute(2, 0, 3, 1, 4)
    sdpa = m.scaled_dot_product_attention
    if isinstance(sdpa, partial):  # stock qk_scale path: the py impl divides by `scale`
        logits = q @ k.mT / sdpa.keywords['scale']
    else:
        logits = q @ k.mT * m.head_dims**-0.5
    return logits.float().softmax(-1)


for _cls in (WindowMSA, DetWindowMSA, XCA, ConditionedWindowMSA, ConditionedDetWindowMSA,
             ConditionedXCA):
    register_attention(_cls)
for _cls in (MultiheadAttention, ConditionedMultiheadAttention):
    register_attention(_cls, AttentionAdapter(attention_from_qkv=_mha_attention))
