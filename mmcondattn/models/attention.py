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
"""
from contextlib import contextmanager
from functools import partial
from typing import Dict

import torch
import torch.nn as nn
from mmdet.models.backbones.swin import WindowMSA as DetWindowMSA
from mmdet.registry import MODELS as MMDET_MODELS
from mmpretrain.models.backbones.xcit import XCA
from mmpretrain.models.utils.attention import MultiheadAttention, WindowMSA
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from ..conditioning import (PreconditionedLinear, condition_attention, parse_conditioning,
                            precondition)
from ..conditioning.model import (ATTENTION_ADAPTERS, AttentionAdapter, condition_attention_layer,
                                  load_adapters, register_attention)

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


def attention_layers(model: nn.Module):
    """``[(name, module)]`` of the attention layers :func:`record_attention` records (every
    class of the adapter table, stock or conditioned), in module (= forward) order."""
    load_adapters(model)
    return [(name, m) for name, m in model.named_modules() if type(m) in ATTENTION_ADAPTERS]


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


@contextmanager
def record_attention(model: nn.Module):
    """Record attention matrices and head outputs of every attention layer of the adapter
    table (stock or conditioned) while the ``with`` block runs forwards.

    Yields a dict ``{module name: {'x': X, 'attn': A, 'out': O[, 'out_cond': C·O]}}`` filled
    by each forward (last call wins), detached:
    X (B, N, D) the layer's input tokens, from which q, k, v are computed (after the block's
    norm; (B·windows, Ws², C) windows for Swin); A (B, heads, N, N) softmax rows (window
    batches for Swin; (B, heads, d, d) channel attention for XCA); O (B, heads, N, d) head
    outputs before the projection; 'out_cond' the preconditioned outputs where precond is
    on. Hooks are removed on exit; timm layers run their explicit (not fused) attention
    path inside the block, so that A is formed.
    """
    records: Dict[str, dict] = {}
    handles, fused = [], []
    try:
        yield _hook_layers(model, records, handles, fused)
    finally:
        for h in handles:
            h.remove()
        for m in fused:
            m.fused_attn = True


def _hook_layers(model: nn.Module, records: Dict[str, dict], handles: list, fused: list):
    for name, m in attention_layers(model):
        rec = records.setdefault(name, {})
        adapter = ATTENTION_ADAPTERS[type(m)]
        if getattr(m, 'fused_attn', False):  # timm: the explicit path forms A
            m.fused_attn = False
            fused.append(m)

        def on_input(mod, args, kwargs, rec=rec):
            rec['x'] = (args[0] if args else kwargs['x']).detach()

        handles.append(m.register_forward_pre_hook(on_input, with_kwargs=True))

        def on_proj(mod, args, heads=adapter.num_heads(m), rec=rec):
            o = args[0].detach().unflatten(-1, (heads, -1)).transpose(-3, -2)
            rec['out'] = o  # (B, heads, N, d)
            if isinstance(mod, PreconditionedLinear):
                p = mod.precond
                rec['out_cond'] = precondition(o, p.eps, p.scale, p.detach)

        handles.append(getattr(m, adapter.proj).register_forward_pre_hook(on_proj))
        if adapter.attention_from_qkv is not None:
            hook = (lambda mod, args, out, m=m, rec=rec, f=adapter.attention_from_qkv: rec.
                    __setitem__('attn', f(m, out.detach())))
            handles.append(getattr(m, adapter.qkv).register_forward_hook(hook))
        else:  # attn_drop receives the softmaxed (and masked) attention
            hook = (lambda mod, args, rec=rec: rec.__setitem__('attn', args[0].detach()))
            handles.append(m.attn_drop.register_forward_pre_hook(hook))
    return records


for _cls in (WindowMSA, DetWindowMSA, XCA, ConditionedWindowMSA, ConditionedDetWindowMSA,
             ConditionedXCA):
    register_attention(_cls)
for _cls in (MultiheadAttention, ConditionedMultiheadAttention):
    register_attention(_cls, AttentionAdapter(attention_from_qkv=_mha_attention))
