"""Pieces shared by every conditioned backbone.

- :class:`ReturnsSelfOnTrain`: ``train()`` / ``eval()`` return the module (the stock
  mmpretrain / mmdet backbones return None, which breaks ``model = build(cfg).eval()``).
- :func:`check_arch`: one clear error for an unknown ``arch`` (lists the valid ones).
- :class:`PatchTokenConditioning` and :func:`attach_conditioning`: the conditioning of a
  stock backbone: its attention modules are swapped for the conditioned ones and the
  token conditioner is put on the patch tokens, without touching the stock ``forward``.
- :func:`pad_to_multiple`: bottom/right zero padding, for the multi-scale detection forms.
- :func:`register_classification_key_filter`: lets a detection form load a classifier
  checkpoint of the same arch (drops the keys only the classifier has).
"""
from typing import Iterable, Mapping, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log

from mmcondattn.conditioning import (ConditioningConfig, TokenConditioner,
                                     parse_conditioning)
from mmcondattn.converters.classifier_to_detector import drop_classification_keys
from ..attention import condition_attention_modules

__all__ = [
    'ReturnsSelfOnTrain', 'check_arch', 'PatchTokenConditioning', 'attach_conditioning',
    'pad_to_multiple', 'register_classification_key_filter'
]


class ReturnsSelfOnTrain:
    """Mixin (put before the stock backbone class): ``train`` returns ``self`` like
    ``nn.Module.train`` does."""

    def train(self, mode: bool = True):
        super().train(mode)
        return self


def check_arch(arch: Union[str, dict], zoo: Mapping[str, dict], required: Iterable[str],
               owner: str) -> dict:
    """Return the hyper-parameters of ``arch`` (a preset name of ``zoo`` or a custom dict).

    Raises:
        ValueError: unknown preset name (the message lists the valid ones) or a custom
            dict that lacks a required key.
    """
    required = sorted(required)
    if isinstance(arch, str):
        if arch.lower() not in zoo:
            raise ValueError(f'{owner}: unknown arch {arch!r}; valid archs: '
                             f'{sorted(zoo)}, or a dict with keys {required}')
        return dict(zoo[arch.lower()])
    if isinstance(arch, Mapping):
        missing = [k for k in required if k not in arch]
        if missing:
            raise ValueError(f'{owner}: custom arch dict lacks {missing}; it needs the keys '
                             f'{required}')
        return dict(arch)
    raise TypeError(f'{owner}: arch must be a preset name ({sorted(zoo)}) or a dict, '
                    f'got {type(arch).__name__}')


class PatchTokenConditioning(nn.Module):
    """Token conditioning of the patch tokens of a (B, N, D) sequence.

    The first ``num_extra_tokens`` tokens (class / register tokens) pass unchanged; the
    other N - k go through ``conditioner``. Used through two hooks, so the stock
    backbone's ``forward`` and state-dict keys stay as they are:

    - :meth:`after_patch_embed` (forward hook of ``patch_embed``, whose output is
      ``(tokens, hw_shape)``): conditions the tokens before the position embedding;
    - :meth:`before_pos_drop` (forward pre-hook of the dropout that follows the position
      embedding): conditions them after it.

    Args:
        conditioner (nn.Module): maps (B, n, D) -> (B, n, D); has no parameters.
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

    def after_patch_embed(self, module, args, output):
        tokens, *rest = output  # (B, N, D), hw_shape
        return (self(tokens), *rest)

    def before_pos_drop(self, module, args):
        tokens, *rest = args  # (B, k + N, D)
        return (self(tokens), *rest)

    def extra_repr(self) -> str:
        return f'num_extra_tokens={self.num_extra_tokens}'


def attach_conditioning(backbone: nn.Module,
                        conditioning: Union[None, dict, ConditioningConfig],
                        patch_embed: nn.Module,
                        pos_drop: nn.Module,
                        num_extra_tokens: int = 0) -> ConditioningConfig:
    """Condition a freshly built stock ``backbone`` in place.

    Sets ``backbone.conditioning`` (the parsed config) and
    ``backbone.num_conditioned_attention`` (how many attention modules were converted);
    with token conditioning on, adds ``backbone.token_conditioning``
    (:class:`PatchTokenConditioning`, no parameters) and hooks it on ``patch_embed``
    (position 'before_pos_embed') or on ``pos_drop`` (position 'after_pos_embed'; then
    ``num_extra_tokens`` leading tokens are left out).
    """
    cfg = parse_conditioning(conditioning)
    backbone.conditioning = cfg
    backbone.num_conditioned_attention = condition_attention_modules(backbone, cfg)
    if cfg.tokens is not None:
        before = cfg.tokens.position == 'before_pos_embed'
        backbone.token_conditioning = PatchTokenConditioning(
            TokenConditioner.from_cfg(cfg.tokens),
            num_extra_tokens=0 if before else num_extra_tokens)
        if before:
            patch_embed.register_forward_hook(backbone.token_conditioning.after_patch_embed)
        else:
            pos_drop.register_forward_pre_hook(backbone.token_conditioning.before_pos_drop)
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
            print_log(f'{type(backbone).__name__}: ignored {len(dropped)} '
                      f'classification-only keys ({_summarise(dropped, prefix)})',
                      logger='current')

    handle = backbone._register_load_state_dict_pre_hook(hook)
    backbone._load_state_dict_pre_hooks.move_to_end(handle.id, last=False)


def _summarise(keys, prefix: str) -> str:
    """'ca_layers.*, cls_token' style summary of dropped keys."""
    heads = sorted({k[len(prefix):].split('.')[0] + ('.*' if '.' in k[len(prefix):] else '')
                    for k in keys})
    return ', '.join(heads)
