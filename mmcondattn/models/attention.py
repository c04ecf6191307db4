"""Conditioned attention layers: the stock mmpretrain / mmdet layers plus ``conditioning``.

Each ``Conditioned*`` class subclasses its stock layer and keeps its forward: conditioning
only swaps two child Linears for subclasses that share their Parameters (state-dict keys
unchanged, spectral adds ``qkv.correction``):

* spectral: ``qkv`` → :class:`~mmcondattn.conditioning.SpectralLinear` (W + C);
* precond: ``proj`` → :class:`~mmcondattn.conditioning.PreconditionedLinear`, which scales each
  (token, head) row of the merged head outputs before projecting. Every stock forward here
  merges the heads with a transpose/reshape and calls ``proj`` right away, so this is the
  per-head preconditioning of docs/methods.md (after fused SDPA in MultiheadAttention, after
  the masked softmax and ``attn @ v`` per window in Swin, on the token rows of XCA's
  (B, heads, d, N) output).

Token conditioning is not a layer matter: backbones apply ``TokenConditioner`` after the
patch embedding. With conditioning off a conditioned layer is its stock layer.
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

from ..conditioning import (PreconditionedLinear, SpectralLinear, parse_conditioning,
                            precondition)

__all__ = [
    'ConditionedMultiheadAttention', 'ConditionedWindowMSA', 'ConditionedDetWindowMSA',
    'ConditionedXCA', 'condition_attention_modules', 'record_attention', 'attention_layers',
    'CONDITIONED_LAYERS'
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
        self._attach_conditioning(conditioning)

    def _attach_conditioning(self, conditioning=None) -> None:
        """Swap ``qkv`` / ``proj`` for their conditioned subclasses (same Parameters)."""
        cfg = parse_conditioning(conditioning)
        self.conditioning = cfg
        if cfg.spectral is not None:
            self.qkv = SpectralLinear.from_linear(self.qkv, cfg.spectral)
        if cfg.precond is not None:
            self.proj = PreconditionedLinear.from_linear(self.proj, self.num_heads, cfg.precond)


@_register
class ConditionedMultiheadAttention(ConditionedAttentionMixin, MultiheadAttention):
    """mmpretrain ``MultiheadAttention`` (ViT, DeiT) with ``conditioning``; other args as
    the stock layer. The fused ``F.scaled_dot_product_attention`` path is kept."""


@_register
class ConditionedWindowMSA(ConditionedAttentionMixin, WindowMSA):
    """mmpretrain ``WindowMSA`` (Swin) with ``conditioning``; other args as the stock layer.
    Pass it as ``ShiftWindowMSA(window_msa=...)`` or convert a built model."""


@_register
class ConditionedDetWindowMSA(ConditionedAttentionMixin, DetWindowMSA):
    """mmdet ``WindowMSA`` (mmdet's Swin) with ``conditioning``; other args as stock."""


@_register
class ConditionedXCA(ConditionedAttentionMixin, XCA):
    """mmpretrain ``XCA`` (XCiT cross-covariance attention) with ``conditioning``; other
    args as the stock layer."""


# exact stock class -> conditioned subclass
CONDITIONED_LAYERS = {
    MultiheadAttention: ConditionedMultiheadAttention,
    WindowMSA: ConditionedWindowMSA,
    DetWindowMSA: ConditionedDetWindowMSA,
    XCA: ConditionedXCA,
}


def condition_attention_modules(model: nn.Module, conditioning) -> int:
    """Convert, in place, every stock attention layer of ``model`` into its conditioned
    subclass (same Parameters, same state-dict keys plus ``qkv.correction`` for spectral).

    Only exact instances of the four stock classes are converted (not other subclasses, nor
    already conditioned layers). Nothing is converted when ``conditioning`` has no layer
    method (precond, spectral): a tokens-only or empty config returns 0.

    Returns:
        int: the number of layers converted.
    """
    cfg = parse_conditioning(conditioning)
    if not cfg.layer_methods:
        return 0
    n = 0
    for m in list(model.modules()):
        sub = CONDITIONED_LAYERS.get(type(m))
        if sub is not None:
            m.__class__ = sub
            m._attach_conditioning(cfg)
            n += 1
    return n


def _is_attention(m: nn.Module) -> bool:
    return isinstance(m, tuple(CONDITIONED_LAYERS))


def attention_layers(model: nn.Module):
    """``[(name, module)]`` of the attention layers :func:`record_attention` records (stock
    or conditioned, the four families), in module (= forward) order."""
    return [(name, m) for name, m in model.named_modules() if _is_attention(m)]


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
    """Record attention matrices and head outputs of every attention layer (stock or
    conditioned, the four families) while the ``with`` block runs forwards.

    Yields a dict ``{module name: {'x': X, 'attn': A, 'out': O[, 'out_cond': C·O]}}`` filled
    by each forward (last call wins), detached:
    X (B, N, D) the layer's input tokens, from which q, k, v are computed (after the block's
    norm; (B·windows, Ws², C) windows for Swin); A (B, heads, N, N) softmax rows (window
    batches for Swin; (B, heads, d, d) channel attention for XCA); O (B, heads, N, d) head
    outputs before the projection; 'out_cond' the preconditioned outputs where precond is
    on. Hooks are removed on exit.
    """
    records: Dict[str, dict] = {}
    handles = []
    for name, m in attention_layers(model):
        rec = records.setdefault(name, {})

        def on_input(mod, args, kwargs, rec=rec):
            rec['x'] = (args[0] if args else kwargs['x']).detach()

        handles.append(m.register_forward_pre_hook(on_input, with_kwargs=True))

        def on_proj(mod, args, m=m, rec=rec):
            o = args[0].detach().unflatten(-1, (m.num_heads, -1)).transpose(-3, -2)
            rec['out'] = o  # (B, heads, N, d)
            if isinstance(mod, PreconditionedLinear):
                p = mod.precond
                rec['out_cond'] = precondition(o, p.eps, p.scale, p.detach)

        handles.append(m.proj.register_forward_pre_hook(on_proj))
        if isinstance(m, MultiheadAttention):
            hook = (lambda mod, args, out, m=m, rec=rec: rec.__setitem__(
                'attn', _mha_attention(m, out.detach())))
            handles.append(m.qkv.register_forward_hook(hook))
        else:  # attn_drop receives the softmaxed (and masked) attention
            hook = (lambda mod, args, rec=rec: rec.__setitem__('attn', args[0].detach()))
            handles.append(m.attn_drop.register_forward_pre_hook(hook))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()
