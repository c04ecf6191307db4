"""Conditioning a built model in place: :func:`condition_model` and its adapter table.

Conditioning replaces children, never a module's class: an attention layer's fused ``qkv``
becomes a :class:`SpectralLinear` and its ``proj`` a :class:`PreconditionedLinear` (same
Parameters, so the state-dict keys stay, plus ``qkv.correction``), and a backbone gets a
``token_conditioning`` child (no parameters) applied by a hook after its patch embedding or
before the dropout that follows its position embedding.

What is supported is a table: an :class:`AttentionAdapter` per attention class (exact type)
and a :class:`BackboneAdapter` per backbone class (subclasses included). OpenMMLab's are
registered by ``mmcondattn.models``, timm's by ``mmcondattn.adapters.timm``; either is
imported when :func:`condition_model` first meets a module of that library.
"""
import importlib
import operator
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .options import ConditioningConfig, ConditioningConfigError, TokensCfg, parse_conditioning
from .precond import PreconditionedLinear
from .spectral import SpectralLinear
from .state import attach_state, report_drift
from .tokens import TokenConditioner

__all__ = [
    'AttentionAdapter', 'BackboneAdapter', 'ATTENTION_ADAPTERS', 'BACKBONE_ADAPTERS',
    'register_attention', 'register_backbone', 'condition_model', 'condition_attention',
    'condition_attention_layer', 'attach_token_conditioning', 'PatchTokenConditioning',
    'attention_adapter', 'load_adapters', 'supported', 'rank_deficient_embedding'
]


@dataclass(frozen=True)
class AttentionAdapter:
    """How to condition one attention class.

    Args:
        qkv, proj (str): names of the fused qkv Linear (D_in -> 3·D_out) and of the output
            projection, which must receive the merged head outputs (..., N, heads·d).
            Default 'qkv', 'proj'.
        num_heads: module -> heads merged in ``proj``'s input. Default: ``module.num_heads``.
        precond_error: module -> None, or why precond cannot run right before ``proj`` for
            this instance (e.g. a norm between the heads and ``proj``). Default: always fine.
        attention_from_qkv: (module, qkv output) -> A (B, heads, N, N), for layers that never
            form A (fused kernels); used by ``record_attention``. Default None.
    """
    qkv: str = 'qkv'
    proj: str = 'proj'
    num_heads: Callable[[nn.Module], int] = operator.attrgetter('num_heads')
    precond_error: Optional[Callable[[nn.Module], Optional[str]]] = None
    attention_from_qkv: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None


@dataclass(frozen=True)
class BackboneAdapter:
    """Where a backbone's tokens are conditioned.

    Args:
        patch_embed (str): the patch embedding; its output is the tokens (B, N, D) or
            channels-last maps (B, H, W, D), alone or first in a tuple. Default 'patch_embed'.
        pos_drop (str, optional): the module right after the position embedding, whose first
            input is the tokens (B, k + N, D) ('after_pos_embed'). None: no position
            embedding, both positions condition the patch embedding's output. Default None.
        num_prefix_tokens: backbone -> k, leading class / register tokens at ``pos_drop``
            that are left out. Default: 0.
    """
    patch_embed: str = 'patch_embed'
    pos_drop: Optional[str] = None
    num_prefix_tokens: Callable[[nn.Module], int] = lambda backbone: 0


ATTENTION_ADAPTERS: Dict[type, AttentionAdapter] = {}
BACKBONE_ADAPTERS: Dict[type, BackboneAdapter] = {}
# top-level package of a module's class -> the module that registers its adapters
_ADAPTER_MODULES = {
    'timm': 'mmcondattn.adapters.timm',
    'mmpretrain': 'mmcondattn.openmmlab',
    'mmdet': 'mmcondattn.openmmlab',
}


def register_attention(cls: type, adapter: AttentionAdapter = AttentionAdapter()) -> type:
    """Make instances of exactly ``cls`` conditionable (precond, spectral). Returns ``cls``."""
    ATTENTION_ADAPTERS[cls] = adapter
    return cls


def register_backbone(cls: type, adapter: BackboneAdapter) -> type:
    """Make ``cls`` and its subclasses conditionable with tokens. Returns ``cls``."""
    BACKBONE_ADAPTERS[cls] = adapter
    return cls


def attention_adapter(module: nn.Module) -> Optional[AttentionAdapter]:
    """The adapter of ``module``'s exact class, or None."""
    return ATTENTION_ADAPTERS.get(type(module))


def _by_mro(table: dict, module: nn.Module):
    return next((table[c] for c in type(module).__mro__ if c in table), None)


def _backbone_adapter(module: nn.Module) -> Optional[BackboneAdapter]:
    return _by_mro(BACKBONE_ADAPTERS, module)


def load_adapters(model: nn.Module) -> None:
    """Import the adapters of every library ``model`` has modules of (timm, OpenMMLab)."""
    for m in model.modules():
        name = _ADAPTER_MODULES.get(type(m).__module__.split('.')[0])
        if name is not None:
            importlib.import_module(name)


def supported(table: dict) -> str:
    """'module.Class, ...' of an adapter table, sorted."""
    return ', '.join(sorted(f'{c.__module__}.{c.__qualname__}' for c in table))


def _is_conditioned(layer: nn.Module, a: AttentionAdapter) -> bool:
    return isinstance(getattr(layer, a.qkv), SpectralLinear) or \
        isinstance(getattr(layer, a.proj), PreconditionedLinear)


def _check_precond(layer: nn.Module, a: AttentionAdapter) -> None:
    reason = a.precond_error(layer) if a.precond_error is not None else None
    if reason:
        raise ConditioningConfigError(
            f'conditioning.precond: {type(layer).__name__} cannot be preconditioned right '
            f'before its {a.proj!r}: {reason}')


def condition_attention_layer(layer: nn.Module,
                              conditioning,
                              adapter: Optional[AttentionAdapter] = None) -> None:
    """Condition one attention layer in place: swap ``qkv`` / ``proj`` (same Parameters) and
    set ``layer.conditioning`` (the parsed config)."""
    cfg = parse_conditioning(conditioning)
    a = adapter or _by_mro(ATTENTION_ADAPTERS, layer)
    if a is None:
        raise ConditioningConfigError(f'{type(layer).__name__} is not a supported attention '
                                      f'class: {supported(ATTENTION_ADAPTERS)}')
    if cfg.precond is not None:
        _check_precond(layer, a)
    if cfg.spectral is not None:
        setattr(
            layer, a.qkv,
            SpectralLinear.from_linear(
                getattr(layer, a.qkv), cfg.spectral, num_heads=a.num_heads(layer)))
    if cfg.precond is not None:
        setattr(
            layer, a.proj,
            PreconditionedLinear.from_linear(
                getattr(layer, a.proj), a.num_heads(layer), cfg.precond))
    layer.conditioning = cfg


def _layers_to_condition(model: nn.Module, cfg: ConditioningConfig):
    found = [(m, a) for m in model.modules() if (a := attention_adapter(m)) is not None]
    if not found:
        methods = [n for n in ('precond', 'spectral') if getattr(cfg, n) is not None]
        raise ConditioningConfigError(
            f'conditioning: {methods} need attention layers, and {type(model).__name__} has '
            f'none of the supported classes: {supported(ATTENTION_ADAPTERS)}')
    todo = [(m, a) for m, a in found if not _is_conditioned(m, a)]
    if cfg.precond is not None:
        for m, a in todo:
            _check_precond(m, a)
    return todo


def condition_attention(model: nn.Module, conditioning) -> int:
    """Condition (precond, spectral) every supported attention layer of ``model`` in place.

    Layers already conditioned are left as they are. Returns how many were conditioned (0
    when ``conditioning`` has neither method).

    Raises:
        ConditioningConfigError: ``model`` has no supported attention layer (the message
            lists the supported classes), or precond is asked of a layer it cannot be
            applied to correctly.
    """
    cfg = parse_conditioning(conditioning)
    if not cfg.layer_methods:
        return 0
    load_adapters(model)
    todo = _layers_to_condition(model, cfg)
    for m, a in todo:
        condition_attention_layer(m, cfg, a)
    return len(todo)


class PatchTokenConditioning(nn.Module):
    """Token conditioning of the patch tokens of a (B, N, D) sequence; no parameters.

    The first ``num_extra_tokens`` tokens (class / register tokens) pass unchanged; the
    other N - k go through ``conditioner``. Applied by hooks, so the backbone's ``forward``
    and state-dict keys stay as they are: :meth:`after_patch_embed` (forward hook of the
    patch embedding; tokens (B, N, D) or channels-last maps (B, H, W, D), alone or first in
    a tuple) or :meth:`before_pos_drop` (forward pre-hook of the module after the position
    embedding).

    Args:
        conditioner (nn.Module): maps (B, n, D) -> (B, n, D).
        num_extra_tokens (int): leading tokens to leave out. Defaults to 0.
    """

    def __init__(self, conditioner: nn.Module, num_extra_tokens: int = 0):
        super().__init__()
        self.conditioner = conditioner
        self.num_extra_tokens = num_extra_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.num_extra_tokens
        if k == 0:
            return self.conditioner(x)  # (B, N, D)
        return torch.cat([x[:, :k], self.conditioner(x[:, k:])], dim=1)  # (B, k + n, D)

    def _tokens(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4:  # (B, H, W, D) channels-last maps
            return self(t.flatten(1, 2)).view_as(t)
        return self(t)

    def after_patch_embed(self, module, args, output):
        if isinstance(output, (tuple, list)):
            tokens, *rest = output  # e.g. (tokens, hw_shape)
            return (self._tokens(tokens), *rest)
        return self._tokens(output)

    def before_pos_drop(self, module, args):
        tokens, *rest = args  # (B, k + N, D)
        return (self(tokens), *rest)

    def extra_repr(self) -> str:
        return f'num_extra_tokens={self.num_extra_tokens}'


def rank_deficient_embedding(patch_embed: nn.Module) -> bool:
    """Whether ``patch_embed``'s tokens (B, N, D) have rank < D whatever its weights: one
    Conv2d of k = in/groups·kh·kw values per patch into D > k + 3 channels, and no other
    conv (a norm after it adds at most its bias, the mean and the shift: rank <= k + 3).
    Swin's 4×4×3 = 48 into 96 is; ViT's 16×16×3 = 768 into 384 and XCiT's conv stem are not."""
    convs = [m for m in patch_embed.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != 1:
        return False
    conv = convs[0]
    k = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    return k + 3 < conv.out_channels


def attach_token_conditioning(backbone: nn.Module,
                              tokens: TokensCfg,
                              patch_embed: nn.Module,
                              pos_drop: Optional[nn.Module] = None,
                              num_prefix_tokens: int = 0) -> PatchTokenConditioning:
    """Add ``backbone.token_conditioning`` and hook it on ``patch_embed`` (position
    'before_pos_embed', or no ``pos_drop``) or on ``pos_drop`` ('after_pos_embed', leaving
    the ``num_prefix_tokens`` leading tokens out)."""
    before = tokens.position == 'before_pos_embed' or pos_drop is None
    conditioner = TokenConditioner.from_cfg(tokens)
    # after a position embedding the tokens have full rank again
    conditioner.rank_deficient = before and rank_deficient_embedding(patch_embed)
    tc = PatchTokenConditioning(conditioner, num_extra_tokens=0 if before else num_prefix_tokens)
    backbone.token_conditioning = tc
    if before:
        patch_embed.register_forward_hook(tc.after_patch_embed)
    else:
        pos_drop.register_forward_pre_hook(tc.before_pos_drop)
    return tc


def _backbones(model: nn.Module) -> List[Tuple[nn.Module, BackboneAdapter]]:
    found = [(m, a) for m in model.modules() if (a := _backbone_adapter(m)) is not None]
    if not found:
        raise ConditioningConfigError(
            f'conditioning.tokens: {type(model).__name__} is not, and holds no, supported '
            f'backbone: {supported(BACKBONE_ADAPTERS)} (or their subclasses)')
    return [(m, a) for m, a in found if not hasattr(m, 'token_conditioning')]


def condition_model(model: nn.Module, conditioning=None, report: bool = True) -> nn.Module:
    """Condition ``model`` in place with any of the three methods; returns ``model``.

    ``model`` is a supported backbone (OpenMMLab's ViT, Swin, XCiT; timm's ViT / DeiT,
    Swin, XCiT) or holds one (a detector, a classifier, mmpretrain's ``TIMMBackbone``):
    precond and spectral condition every supported attention layer, tokens each supported
    backbone. ``model`` gets a ``conditioning_state`` child (:mod:`.state`): the record of
    its conditioning that its checkpoints carry, checked when weights are loaded into it
    (one log line with the measured change of its output where they were trained otherwise),
    and the warm start. Nothing is changed before every check has passed.

    Args:
        model (nn.Module): the model, built and initialised (an svd correction is computed
            from the weights it has now; see :class:`SpectralLinear` for later loads).
        conditioning (dict | ConditioningConfig | None): see :func:`parse_conditioning`.
            None or ``{}`` leaves the model stock. ``warm_start=dict(iters=N)`` starts every
            method at strength 0 (the model computes what it computed before) and ramps it
            to 1 over N training forwards.
        report (bool): log one line with the change of ``model``'s output that conditioning
            makes (its weights, e.g. a public checkpoint, were trained without it), as a load
            of such weights does. Default True; the registered backbones, conditioned while
            they are built, pass False.

    Raises:
        ConditioningConfigError: a bad config, or a method the model has no place for.
    """
    cfg = parse_conditioning(conditioning)
    if not cfg.enabled:
        return model
    load_adapters(model)
    layers = _layers_to_condition(model, cfg) if cfg.layer_methods else []
    backbones = _backbones(model) if cfg.tokens is not None else []
    for m, a in layers:
        condition_attention_layer(m, cfg, a)
    for b, a in backbones:
        attach_token_conditioning(b, cfg.tokens, getattr(b, a.patch_embed),
                                  getattr(b, a.pos_drop) if a.pos_drop else None,
                                  a.num_prefix_tokens(b))
    if not hasattr(model, 'conditioning_state'):
        attach_state(model, cfg)
        if report:
            report_drift(model)
    return model
