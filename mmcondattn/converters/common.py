"""What every converter shares: reading / writing checkpoints and rule-based key renaming.

A converter is a list of :class:`Rule` (regular expression on the source key -> target
key(s)); :func:`apply_rules` applies the first rule that matches each key and raises
:class:`ConversionError` listing every key that no rule maps, so nothing is dropped
silently.
"""
import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch

__all__ = [
    'ConversionError', 'Rule', 'add_prefix', 'apply_rules', 'load_state_dict', 'save_state_dict',
    'split_prefix', 'unwrap_state_dict'
]

StateDict = Dict[str, torch.Tensor]
# A rule's target: a template for re.Match.expand (r'layers.\1.ln1'), None (drop the key on
# purpose), or a function (match, tensor) -> [(key, tensor), ...] for keys that split or
# need their values changed.
Target = Union[str, None, Callable[[re.Match, torch.Tensor], List[Tuple[str, torch.Tensor]]]]


class ConversionError(ValueError):
    """A source checkpoint holds keys the converter cannot map (the message lists them)."""


class Rule:
    """Map source keys matching ``pattern`` (``re.fullmatch``) to ``target``."""

    def __init__(self, pattern: str, target: Target):
        self.pattern = re.compile(pattern)
        self.target = target

    def __call__(self, key: str, value: torch.Tensor):
        """[(new_key, new_value), ...] ([] to drop), or None if the rule does not match."""
        m = self.pattern.fullmatch(key)
        if m is None:
            return None
        if self.target is None:
            return []
        if callable(self.target):
            return self.target(m, value)
        return [(m.expand(self.target), value)]


def apply_rules(state_dict: StateDict, rules: Iterable[Rule], what: str) -> StateDict:
    """Rename every key of ``state_dict`` by the first matching rule.

    Raises:
        ConversionError: some keys match no rule, or two keys map to the same target.
    """
    rules = list(rules)
    out, unmapped = OrderedDict(), []
    for key, value in state_dict.items():
        for rule in rules:
            mapped = rule(key, value)
            if mapped is not None:
                break
        else:
            unmapped.append(key)
            continue
        for new_key, new_value in mapped:
            if new_key in out:
                raise ConversionError(f'{what}: two source keys map to {new_key!r}')
            out[new_key] = new_value
    if unmapped:
        raise ConversionError(f'{what}: {len(unmapped)} keys have no mapping (is this the '
                              f'right converter for this checkpoint?): {_short(unmapped)}')
    return out


def split_prefix(state_dict: StateDict,
                 prefix: str,
                 keep_prefix: bool = False) -> Tuple[StateDict, StateDict]:
    """(keys starting with ``prefix`` -- without it unless ``keep_prefix`` --, the others)."""
    inside, outside = OrderedDict(), OrderedDict()
    for k, v in state_dict.items():
        if k.startswith(prefix):
            inside[k if keep_prefix else k[len(prefix):]] = v
        else:
            outside[k] = v
    return inside, outside


def add_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """``state_dict`` with ``prefix`` put before every key."""
    return OrderedDict((prefix + k, v) for k, v in state_dict.items())


def _short(keys: List[str], limit: int = 20) -> str:
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def unwrap_state_dict(ckpt) -> StateDict:
    """The state dict inside a checkpoint: ``ckpt['state_dict']`` (mmengine, mmdet),
    ``ckpt['model']`` (official XCiT / DeiT / Swin), or ``ckpt`` itself (timm); a
    ``module.`` prefix (DataParallel) is removed."""
    if not isinstance(ckpt, dict):
        raise ConversionError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    for name in ('state_dict', 'model'):
        if isinstance(ckpt.get(name), dict):
            ckpt = ckpt[name]
            break
    bad = [k for k, v in ckpt.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f'not a state dict: entries {_short(bad)} are not tensors')
    if ckpt and all(k.startswith('module.') for k in ckpt):
        ckpt = OrderedDict((k[len('module.'):], v) for k, v in ckpt.items())
    return ckpt


def load_state_dict(path: str) -> StateDict:
    """Read a checkpoint file with ``torch.load(weights_only=True)`` and unwrap it.

    With mmengine installed, through :func:`mmcondattn.compat.load_checkpoint_file` (which
    also reads mmengine's runner checkpoints); with torch alone, a file of tensors.
    """
    try:
        import mmengine  # noqa: F401  runner checkpoints pickle mmengine objects
    except ImportError:
        if not osp.isfile(path):
            raise ConversionError(f'{path}: no such checkpoint file') from None
        try:
            return unwrap_state_dict(torch.load(path, map_location='cpu', weights_only=True))
        except Exception as e:  # corrupt, or holds more than tensors and containers
            raise ConversionError(f'{path}: torch.load(weights_only=True) cannot read it: '
                                  f'{e}') from None
    from mmcondattn.compat import load_checkpoint_file
    return unwrap_state_dict(load_checkpoint_file(path, map_location='cpu'))


def save_state_dict(state_dict: StateDict,
                    path: str,
                    force: bool = False,
                    meta: Optional[dict] = None) -> None:
    """Write ``{'state_dict': ..., 'meta': ...}`` (the layout mmengine's loaders read).

    Raises:
        FileExistsError: ``path`` exists and ``force`` is False.
    """
    if osp.exists(path) and not force:
        raise FileExistsError(f'{path} exists; pass --force to overwrite it')
    parent = osp.dirname(osp.abspath(path))
    if not osp.isdir(parent):
        raise FileNotFoundError(f'output folder {parent} does not exist')
    torch.save({'state_dict': state_dict, 'meta': dict(meta or {})}, path)
