"""Conditioning of a model's attention layers on a probe batch, with torch alone.

:func:`measure_conditioning` is the one measurement, used by the
:class:`~mmcondattn.engine.ConditionMonitorHook` while a model trains, by
``tools/analysis_tools/conditioning.py`` on built or trained models, and directly on timm
models (no OpenMMLab package needed); :func:`summarize` and :func:`per_layer` flatten its
result for logs. :func:`record_attention` records the attention matrices and head outputs it
reads, for every class of the adapter table (:mod:`mmcondattn.conditioning.model`): a
library's adapters are imported when a model of it is met (timm's need timm alone,
OpenMMLab's import the OpenMMLab part). The numbers come from
:mod:`mmcondattn.conditioning.numbers` (float64 SVDs by default).

``mmcondattn.models.probe`` and ``mmcondattn.models.attention`` re-export these names.
"""
from contextlib import contextmanager
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from mmcondattn.conditioning import (PreconditionedLinear, SpectralLinear, attention_entropy,
                                     condition_number, min_singular_value, precondition)
from mmcondattn.conditioning.model import ATTENTION_ADAPTERS, load_adapters, supported

__all__ = [
    'LAYER_KEYS', 'HEAD_KEYS', 'measure_conditioning', 'summarize', 'per_layer', 'record_attention',
    'attention_layers'
]

# Per-layer scalars of a row of measure_conditioning. "Mean" is over the probe images (the
# windows of every image for Swin) and, for A and O, the heads.
LAYER_KEYS = {
    'kappa_attn': 'κ(A_h), attention matrices (N×N; d×d channel attention for XCiT)',
    'kappa_out': 'κ(O_h), head outputs O_h = A_h V_h (N×d)',
    'kappa_out_proj': 'κ of the head outputs the projection receives: C_h·O_h with precond, '
    'else O_h',
    'kappa_x': 'κ(X), the layer input tokens q, k, v are computed from (N×D, after the '
    "block's norm; per window for Swin)",
    'kappa_wq': 'κ(W_Q), effective D×D query weight (W + C with spectral conditioning)',
    'kappa_wk': 'κ(W_K), effective key weight',
    'kappa_wv': 'κ(W_V), effective value weight',
    'sigma_min_attn': 'σ_min(A_h)',
    'sigma_min_out': 'σ_min(O_h)',
    'sigma_min_x': 'σ_min(X)',
    'sigma_min_wq': 'σ_min(W_Q) (effective)',
    'sigma_min_wk': 'σ_min(W_K) (effective)',
    'sigma_min_wv': 'σ_min(W_V) (effective)',
    'entropy_attn': 'attention entropy (nats; log N for uniform rows), mean over rows',
}
# Per-head lists in a row, as '<key>_heads' (mean over images / windows per head).
HEAD_KEYS = ('kappa_attn', 'kappa_out', 'entropy_attn')


def attention_layers(model: nn.Module):
    """``[(name, module)]`` of the attention layers :func:`record_attention` records (every
    class of the adapter table, stock or conditioned), in module (= forward) order."""
    load_adapters(model)
    return [(name, m) for name, m in model.named_modules() if type(m) in ATTENTION_ADAPTERS]


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


@contextmanager
def _probe_mode(module: nn.Module, device: torch.device):
    """Eval mode, no autograd, no autocast, torch's RNG forked; every module's ``training``
    flag is restored on exit (set back directly: no ``train()`` side effects)."""
    flags = [(m, m.training) for m in module.modules()]
    cuda = [device.index or 0] if device.type == 'cuda' else []
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), \
                torch.autocast(device.type, enabled=False):
            module.eval()
            yield
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def _record_tokens(backbone: nn.Module):
    """Record the embedded patch tokens (B, N, D): the output of ``token_conditioning``
    where token conditioning is on (class tokens left out), else of ``patch_embed``."""
    rec: Dict[str, torch.Tensor] = {}
    src = getattr(backbone, 'token_conditioning', None)
    if src is None:
        src = getattr(backbone, 'patch_embed', None)
    if not isinstance(src, nn.Module):
        yield rec
        return
    skip = getattr(src, 'num_extra_tokens', 0)
    fmt = getattr(src, 'output_fmt', 'NCHW')  # timm's patch embeddings say their layout
    channels_last = getattr(fmt, 'value', fmt) == 'NHWC'

    def hook(mod, args, out):
        t = out[0] if isinstance(out, (tuple, list)) else out
        if t.dim() == 4:  # (B, H, W, D) or (B, D, H, W) maps
            t = t.flatten(1, 2) if channels_last else t.flatten(2).transpose(1, 2)
        rec['tokens'] = t[:, skip:].detach()

    handle = src.register_forward_hook(hook)
    try:
        yield rec
    finally:
        handle.remove()


def _mean(t: torch.Tensor) -> float:
    return t.double().mean().item()


def _heads(t: torch.Tensor) -> List[float]:
    """(..., heads) -> per-head means over the leading dims."""
    return t.double().flatten(0, -2).mean(0).tolist()


def _qkv_weight(attn: nn.Module) -> torch.Tensor:
    """The effective fused qkv weight (3·D, D): W + C for a SpectralLinear."""
    qkv = attn.qkv
    return qkv.effective_weight() if isinstance(qkv, SpectralLinear) else qkv.weight


def _layer_row(index: int, name: str, attn: nn.Module, rec: dict, dtype) -> dict:
    a, o, x = rec['attn'], rec['out'], rec['x']  # (B', h, n, n), (B', h, N, d), (B', N, D)
    row = dict(index=index, name=name)
    k_attn = condition_number(a, dtype=dtype)  # (B', h)
    k_out = condition_number(o, dtype=dtype)  # (B', h)
    entropy = attention_entropy(a)  # (B', h)
    row.update(
        kappa_attn=_mean(k_attn),
        kappa_out=_mean(k_out),
        kappa_out_proj=_mean(condition_number(rec['out_cond'], dtype=dtype))
        if 'out_cond' in rec else _mean(k_out),
        kappa_x=_mean(condition_number(x, dtype=dtype)),
        sigma_min_attn=_mean(min_singular_value(a, dtype)),
        sigma_min_out=_mean(min_singular_value(o, dtype)),
        sigma_min_x=_mean(min_singular_value(x, dtype)))
    for t, w in zip('qkv', _qkv_weight(attn).detach().chunk(3, dim=0)):  # 3 × (D, D)
        row[f'kappa_w{t}'] = condition_number(w, dtype=dtype).item()
        row[f'sigma_min_w{t}'] = min_singular_value(w, dtype).item()
    row['entropy_attn'] = _mean(entropy)
    row.update(
        kappa_attn_heads=_heads(k_attn),
        kappa_out_heads=_heads(k_out),
        entropy_attn_heads=_heads(entropy))
    return {k: row[k] for k in ('index', 'name', *LAYER_KEYS, *(f'{k}_heads' for k in HEAD_KEYS))}


def measure_conditioning(model: nn.Module,
                         inputs: torch.Tensor,
                         dtype: torch.dtype = torch.float64) -> dict:
    """Measure the conditioning of every attention layer of ``model`` on ``inputs``.

    Only the backbone runs (``model.backbone`` if the model has one, e.g. an mmdet detector
    or mmpretrain classifier, else ``model`` itself), in eval mode, under ``no_grad`` with
    autocast off, its RNG state forked and every module's ``training`` flag restored after:
    a training run is unaffected (no RNG draw, no BatchNorm statistics update). Forward hooks
    are attached for this call only.

    Args:
        model (nn.Module): a backbone with attention layers of the adapter table (ViT,
            Swin, XCiT of OpenMMLab or timm), stock or conditioned, or a model holding one
            as ``backbone``.
        inputs (Tensor): (B, 3, H, W) preprocessed images (the data preprocessor's output).
        dtype (torch.dtype): SVD precision. Defaults to float64.

    Returns:
        dict: ``layers``: one row per attention layer in forward order, with ``index``,
        ``name`` (module name in the backbone), a float per key of :data:`LAYER_KEYS`
        (means over images / windows and heads) and a per-head list per
        ``<key>_heads`` of :data:`HEAD_KEYS`; ``tokens``: ``dict(kappa, sigma_min)`` of the
        embedded patch tokens (N×D per image, after token conditioning when it is on;
        means over images), or None when the backbone has no ``patch_embed``.

    Raises:
        ValueError: ``model`` has no attention layer of a supported kind.
    """
    backbone = getattr(model, 'backbone', model)
    layers = attention_layers(backbone)
    if not layers:
        raise ValueError(f'{type(backbone).__name__} has no attention layer to measure: '
                         f'supported are {supported(ATTENTION_ADAPTERS)}, stock or conditioned')
    with _probe_mode(backbone, inputs.device):
        with record_attention(backbone) as recs, _record_tokens(backbone) as tok:
            backbone(inputs)
        rows = [
            _layer_row(i, name, m, recs[name], dtype) for i, (name, m) in enumerate(layers)
            if 'attn' in recs[name]
        ]
    tokens: Optional[dict] = None
    if 'tokens' in tok:
        tokens = dict(
            kappa=_mean(condition_number(tok['tokens'], dtype=dtype)),
            sigma_min=_mean(min_singular_value(tok['tokens'], dtype)))
    return dict(layers=rows, tokens=tokens)


def summarize(result: dict) -> Dict[str, float]:
    """Layer means and maxima of a :func:`measure_conditioning` result.

    Returns ``{'<key>_mean', '<key>_max'}`` for every κ and entropy key of
    :data:`LAYER_KEYS` (``'<key>_mean', '<key>_min'`` for the σ_min keys) and
    ``kappa_tokens``, ``sigma_min_tokens`` when tokens were measured.
    """
    out = {}
    for key in LAYER_KEYS:
        vals = torch.tensor([row[key] for row in result['layers']], dtype=torch.float64)
        out[f'{key}_mean'] = vals.mean().item()
        if key.startswith('sigma_min'):
            out[f'{key}_min'] = vals.min().item()
        else:
            out[f'{key}_max'] = vals.max().item()
    if result.get('tokens'):
        out['kappa_tokens'] = result['tokens']['kappa']
        out['sigma_min_tokens'] = result['tokens']['sigma_min']
    return out


def per_layer(result: dict) -> Dict[str, float]:
    """``{'<key>/<layer index>': value}`` for every key of :data:`LAYER_KEYS`."""
    return {f'{key}/{row["index"]}': row[key] for row in result['layers'] for key in LAYER_KEYS}
