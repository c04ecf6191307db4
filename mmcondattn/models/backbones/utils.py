"""Pieces shared by every conditioned backbone.

- :class:`DropInBackbone`: the mixin (put before the stock backbone class) that keeps a
  conditioned backbone a drop-in for the stock one: ``train()`` / ``eval()`` return the
  module (the stock mmpretrain / mmdet backbones return None, which breaks
  ``model = build(cfg).eval()``), and a pretrained checkpoint URL is fetched into torch's
  hub cache and loaded as a local file (``weights_only``), a failed download being one clear
  error (:func:`local_pretrained`).
- :class:`BackboneConfigError`: a bad backbone argument; the message names it and the valid
  values (``tools/train.py`` / ``tools/test.py`` print it as one line).
- :func:`check_arch`, :func:`resolve_arch`: ``arch`` presets next to the stock classes' own
  spelling (``embed_dims``, ``depths``, ...), with one error when both are given and differ;
  :func:`check_kwargs`: unknown arguments named with the valid ones; :func:`pop_fixed`:
  stock arguments a detection form supports with one value only.
- :func:`attach_conditioning`: the conditioning of a stock backbone, through
  :func:`~mmcondattn.conditioning.condition_model` (the same route users call).
- :func:`pad_to_multiple`: bottom/right zero padding, for the multi-scale detection forms.
- :func:`register_classification_key_filter`: lets a detection form load a classifier
  checkpoint of the same arch (drops the keys only the classifier has).
"""
import copy
import inspect
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Mapping, MutableMapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log

from mmcondattn.conditioning import (ConditioningConfig, PatchTokenConditioning, condition_model,
                                     parse_conditioning)
from mmcondattn.converters.classifier_to_detector import drop_classification_keys

__all__ = [
    'BackboneConfigError', 'DropInBackbone', 'check_arch', 'resolve_arch', 'check_kwargs',
    'pop_fixed', 'local_pretrained', 'PatchTokenConditioning', 'attach_conditioning',
    'pad_to_multiple', 'register_classification_key_filter'
]

# what a config gives to train from scratch instead of the pretrained weights
NO_PRETRAINED_OVERRIDE = '--cfg-options model.backbone.init_cfg=None'


class BackboneConfigError(ValueError):
    """A bad backbone argument (or pretrained checkpoint); the message names it and what
    is valid."""


@contextmanager
def local_pretrained(backbone: nn.Module):
    """While initialising ``backbone``: a checkpoint URL in its ``init_cfg`` (``Pretrained``)
    is downloaded into torch's hub cache (``$TORCH_HOME/hub/checkpoints/<file name>``; once,
    by rank 0 first) and ``init_cfg`` points at that file, so it loads like any local
    checkpoint: through :func:`mmcondattn.compat.load_checkpoint_file`, with
    ``weights_only=True`` (mmengine's own URL loader unpickles anything). A download that
    fails is one :class:`BackboneConfigError` naming the URL and the override that trains
    from scratch."""
    cfg = backbone.init_cfg
    url = cfg.get('checkpoint') if isinstance(cfg, Mapping) and \
        cfg.get('type') == 'Pretrained' else None
    if not (isinstance(url, str) and url.startswith(('http://', 'https://'))):
        yield
        return
    from mmcondattn.compat import CheckpointError, fetch_checkpoint
    print_log(f'{type(backbone).__name__}: pretrained weights {url}', logger='current')
    try:
        path = fetch_checkpoint(url)
    except CheckpointError as e:
        raise BackboneConfigError(f'{type(backbone).__name__}: {e}; or train from scratch with '
                                  f'{NO_PRETRAINED_OVERRIDE}') from None
    local = copy.deepcopy(cfg)
    local['checkpoint'] = path
    backbone.init_cfg = local
    try:
        yield
    finally:
        backbone.init_cfg = cfg


class DropInBackbone:
    """Mixin (put before the stock backbone class): ``train`` returns ``self`` like
    ``nn.Module.train`` does; ``init_weights`` loads a checkpoint URL through
    :func:`local_pretrained`."""

    def train(self, mode: bool = True):
        super().train(mode)
        return self

    def init_weights(self):
        with local_pretrained(self):
            super().init_weights()


def _same(a: Any, b: Any) -> bool:
    """Equal up to list / tuple spelling (``depths=[2, 2]`` is ``(2, 2)``)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_arch(arch: Union[str, dict],
               zoo: Mapping[str, dict],
               required: Iterable[str],
               owner: str,
               given: Optional[Mapping[str, Any]] = None) -> dict:
    """Return the hyper-parameters of ``arch`` (a preset name of ``zoo`` or a custom dict).

    ``given``: explicit values that complete a custom dict (see :func:`resolve_arch`).

    Raises:
        BackboneConfigError: unknown preset name (the message lists the valid ones), a
            custom dict that lacks a required key, or an ``arch`` of another type.
    """
    required = sorted(required)
    if isinstance(arch, str):
        if arch.lower() not in zoo:
            raise BackboneConfigError(f'{owner}: unknown arch {arch!r}; valid archs: '
                                      f'{sorted(zoo)}, or a dict with keys {required}')
        return dict(zoo[arch.lower()])
    if isinstance(arch, Mapping):
        missing = [k for k in required if k not in arch and k not in (given or {})]
        if missing:
            raise BackboneConfigError(f'{owner}: custom arch dict lacks {missing}; it needs '
                                      f'the keys {required}')
        return dict(arch)
    raise BackboneConfigError(f'{owner}: arch must be a preset name ({sorted(zoo)}) or a '
                              f'dict, got {type(arch).__name__}')


def resolve_arch(owner: str, arch: Union[None, str, dict], zoo: Mapping[str, dict],
                 kwargs: MutableMapping[str, Any], keys: Sequence[str],
                 required: Iterable[str]) -> Dict[str, Any]:
    """The architecture settings from ``arch`` and the stock spelling of the same values.

    Takes (pops) ``keys`` (the stock class's own architecture arguments: ``embed_dims``,
    ``depth``, ...) out of ``kwargs``. With ``arch=None`` the result is what was given
    (the stock class fills in its defaults for the rest), so the stock arguments alone
    build exactly the stock backbone; with a preset or dict, its values plus the given
    ones.

    Raises:
        BackboneConfigError: ``arch`` and an explicit value disagree (the message names
            both), or :func:`check_arch`'s errors.
    """
    given = {k: kwargs.pop(k) for k in keys if k in kwargs}
    if arch is None:
        return given
    settings = check_arch(arch, zoo, required, owner, given)
    clash = [k for k in given if k in settings and not _same(settings[k], given[k])]
    if clash:
        says = ', '.join(f'{k}={settings[k]!r}' for k in clash)
        got = ', '.join(f'{k}={given[k]!r}' for k in clash)
        raise BackboneConfigError(
            f'{owner}: arch={arch!r} means {says}, but {got} was given; give either arch or '
            f'the explicit values, or make them agree')
    settings.update(given)
    return settings


def check_kwargs(owner: str, stock: type, kwargs: Mapping[str, Any],
                 own: Iterable[str] = ()) -> None:
    """Raise :class:`BackboneConfigError` for arguments neither ``stock.__init__`` nor the
    conditioned class (``own``) takes, listing the valid ones."""
    params = inspect.signature(stock.__init__).parameters.values()
    valid = {
        p.name
        for p in params if p.name != 'self' and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    } | set(own)
    bad = sorted(k for k in kwargs if k not in valid)
    if bad:
        raise BackboneConfigError(f'{owner}: unknown argument(s) {bad}; valid arguments: '
                                  f'{sorted(valid)}')


def pop_fixed(owner: str, kwargs: MutableMapping[str, Any], fixed: Mapping[str,
                                                                           Any]) -> Dict[str, Any]:
    """Take the stock arguments in ``fixed`` out of ``kwargs``; each may be given, but only
    with the one value this (detection) form supports.

    Returns:
        ``fixed`` as a dict, for the stock constructor.
    """
    for key, value in fixed.items():
        if key in kwargs:
            got = kwargs.pop(key)
            if not _same(got, value):
                raise BackboneConfigError(f'{owner}: {key}={got!r} is not supported; this form '
                                          f'needs {key}={value!r} (or leave {key} out)')
    return dict(fixed)


def attach_conditioning(backbone: nn.Module,
                        conditioning: Union[None, dict, ConditioningConfig]) -> ConditioningConfig:
    """Condition a freshly built stock ``backbone`` in place, by
    :func:`~mmcondattn.conditioning.condition_model` (the route users call; the adapter table
    says where its tokens are conditioned).

    Sets ``backbone.conditioning`` (the parsed config) and
    ``backbone.num_conditioned_attention`` (how many attention layers were conditioned).
    """
    cfg = parse_conditioning(conditioning)
    condition_model(backbone, cfg, report=False)  # built now: no trained weights yet
    backbone.conditioning = cfg
    backbone.num_conditioned_attention = sum(
        1 for m in backbone.modules()
        if isinstance(getattr(m, 'conditioning', None), ConditioningConfig) and m is not backbone)
    return cfg


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom / right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def register_classification_key_filter(backbone: nn.Module, family: str) -> None:
    """Make ``backbone`` (a detection form) accept a classifier checkpoint of its arch.

    A load-state-dict pre-hook drops the keys only the classification form has (see
    :func:`mmcondattn.converters.classifier_to_detector.drop_classification_keys`: class
    token and its position embedding, class-attention layers, ...) and logs them, so the
    report of missing / unexpected keys shows only real mismatches. It runs before the
    stock pre-hooks (e.g. the position-embedding resize, which must not see the class
    token's position).
    """

    def hook(state_dict, prefix, *args, **kwargs):
        dropped = drop_classification_keys(state_dict, family, prefix)
        if dropped:
            print_log(
                f'{type(backbone).__name__}: ignored {len(dropped)} '
                f'classification-only keys ({_summarise(dropped, prefix)})',
                logger='current')

    handle = backbone._register_load_state_dict_pre_hook(hook)
    backbone._load_state_dict_pre_hooks.move_to_end(handle.id, last=False)


def _summarise(keys, prefix: str) -> str:
    """'ca_layers.*, cls_token' style summary of dropped keys."""
    heads = sorted(
        {k[len(prefix):].split('.')[0] + ('.*' if '.' in k[len(prefix):] else '')
         for k in keys})
    return ', '.join(heads)
