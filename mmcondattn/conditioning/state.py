"""What travels with a conditioned model's weights: the record of its conditioning and the
warm start.

:func:`condition_model` gives the model it conditions (the root: a backbone, or the model
handed to it) a ``conditioning_state`` child, :class:`ConditioningState`, with

* ``record``: the conditioning the weights are trained with (JSON bytes in a uint8 buffer, so
  that it is in every checkpoint, read with ``weights_only`` and carried by key converters);
* ``step`` (with ``warm_start``): the model's training forwards so far.

**Loading.** When weights are loaded into the root (``load_state_dict``, mmengine's
``load_checkpoint`` behind ``init_cfg``, ``load_from``, ``tools/test.py``) and what they were
trained with differs from what the model applies (public checkpoints have no record), one
line is logged with the relative change of the model's output on a probe batch
(:func:`drift`) and what to do. A record that agrees logs nothing. The two keys are never
reported missing: their absence is what the record check is for.

**Warm start.** Every conditioned part (:class:`PreconditionedLinear`,
:class:`SpectralLinear`, :class:`TokenConditioner`) has a ``strength`` α:

    precond   O ← ((1 − α)·I + α·C) O        spectral   W ← W + α·C        tokens   X ← X + α·C

α = 0 is exactly the stock function (the parts call the stock op), α = 1 exactly the method.
Without a warm start α is 1. With ``warm_start=dict(iters=N)`` a forward pre-hook sets
α = min(1, t / N) before each forward from ``step`` = t, and a training forward (train mode,
gradients on) then counts itself: t ← t + 1. So the first training step computes what the
loaded checkpoint computes, the method reaches full strength after N training forwards, a
resumed run continues the ramp (``step`` is in the checkpoint), an evaluation uses the α the
next training step would, and folding (:func:`fold_conditioning`) folds W + α·C. Reading
``step`` costs one host synchronisation per forward of the conditioned model (none without a
warm start).
"""
import dataclasses
import json
import logging
import sys
from typing import Dict, Iterator, Optional

import torch
import torch.nn as nn

from .options import ConditioningConfig, describe
from .precond import PreconditionedLinear
from .spectral import SpectralLinear
from .tokens import TokenConditioner

__all__ = [
    'ConditioningState', 'attach_state', 'conditioned_parts', 'drift', 'compare_loaded',
    'report_drift', 'STATE_KEYS'
]

# the state-dict keys a conditioned root adds (besides spectral's ``*.qkv.correction``)
STATE_KEYS = ('conditioning_state.record', 'conditioning_state.step')
# the method each kind of part belongs to
_PART_METHOD = {
    PreconditionedLinear: 'precond',
    SpectralLinear: 'spectral',
    TokenConditioner: 'tokens'
}
GUIDE = "docs/get_started.md, 'Starting from a public checkpoint'"


def _encode(record: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(record, sort_keys=True).encode()), dtype=torch.uint8)


def _decode(buf) -> Optional[dict]:
    try:
        return json.loads(bytes(buf.tolist()).decode())
    except (AttributeError, TypeError, ValueError):
        return None  # not a record this package wrote


def _canonical(methods: dict) -> dict:
    return json.loads(json.dumps(methods, sort_keys=True))  # tuples -> lists, as loaded


class ConditioningState(nn.Module):
    """Buffers ``record`` (uint8 JSON: ``{'conditioning': methods, 'warm_start': options or
    None}``) and, with a warm start, ``step`` (int64, training forwards so far); no
    parameters. See the module docstring.

    Args:
        cfg (ConditioningConfig): the model's parsed conditioning (some method on).
    """

    def __init__(self, cfg: ConditioningConfig):
        super().__init__()
        self.cfg = cfg
        ws = cfg.to_dict().get('warm_start')
        self.register_buffer('record', _encode(dict(conditioning=cfg.methods(), warm_start=ws)))
        if cfg.warm_start is not None:
            self.register_buffer('step', torch.zeros((), dtype=torch.long))
        self.loaded = None  # set while loading: see _load_from_state_dict
        self.last_load = None  # what the last load did: see compare_loaded

    def forget(self, method: str) -> None:
        """Record that ``method`` is no longer applied (e.g. spectral, after folding)."""
        self.cfg = dataclasses.replace(self.cfg, **{method: None})
        if not self.cfg.enabled:
            self.cfg = dataclasses.replace(self.cfg, warm_start=None)
        ws = self.cfg.to_dict().get('warm_start')
        record = _encode(dict(conditioning=self.cfg.methods(), warm_start=ws))
        self.record = record.to(self.record.device)

    def strength(self, step: Optional[int] = None) -> float:
        """α = min(1, step / iters) (1 without a warm start); ``step``: default the buffer's."""
        if self.cfg.warm_start is None:
            return 1.0
        step = int(self.step) if step is None else step
        return min(1.0, step / self.cfg.warm_start.iters)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # record: kept (it says what this model applies); the loaded one is compared after
        # the load (_after_load). step: restored when both sides have a warm start.
        record = state_dict.get(prefix + 'record')
        loaded = _decode(record) if record is not None else None
        step = state_dict.get(prefix + 'step')
        self.loaded = dict(record=loaded, step=None if step is None else int(step))
        if step is not None and hasattr(self, 'step'):
            self.step.fill_(int(step))

    def extra_repr(self) -> str:
        ws = self.cfg.warm_start
        return str(self.cfg) + ('' if ws is None else f', warm_start: iters={ws.iters}')


def conditioned_parts(model: nn.Module) -> Iterator[nn.Module]:
    """The modules of ``model`` that have a strength: the conditioned Linears and token
    conditioners."""
    return (m for m in model.modules() if type(m) in _PART_METHOD)


def _set_strength(model: nn.Module, alpha: Dict[str, float]) -> None:
    for m in conditioned_parts(model):
        m.strength = alpha.get(_PART_METHOD[type(m)], 0.0)


def _ramp(root: nn.Module, args) -> None:
    """Forward pre-hook of a warm-started root: α from ``step``, then count a training one."""
    state = root.conditioning_state
    if state.__dict__.get('_measuring'):
        return  # drift() sets α itself
    step = int(state.step)
    _set_strength(root, {m: state.strength(step) for m in state.cfg.methods()})
    if root.training and torch.is_grad_enabled():
        state.step.fill_(step + 1)


def _probe_backbone(root: nn.Module) -> Optional[nn.Module]:
    from .model import _backbone_adapter  # the adapter table (no import cycle at load time)
    return next((m for m in root.modules() if _backbone_adapter(m) is not None), None)


def _probe_sizes(backbone: nn.Module):
    """Input sizes (H, W) to try: what the backbone stores (its own ``img_size``, its patch
    embedding's ``img_size`` / ``init_input_size``), then 224."""
    sizes = []
    for owner in (backbone, getattr(backbone, 'patch_embed', None)):
        for name in ('img_size', 'init_input_size', 'pretrain_img_size'):
            size = getattr(owner, name, None)
            if isinstance(size, int):
                size = (size, size)
            if isinstance(size, (tuple, list)) and len(size) == 2 and tuple(size) not in sizes:
                sizes.append(tuple(size))
    return sizes + [(224, 224)] * ((224, 224) not in sizes)


def _probe_input(backbone: nn.Module, size, batch: int = 2) -> torch.Tensor:
    """A fixed random batch (B, C, H, W), C = the backbone's first conv's input channels."""
    conv = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    param = next(backbone.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, conv.in_channels if conv is not None else 3, *size, generator=gen)
    return x.to(param.device, param.dtype)


def _outputs(backbone: nn.Module, root: nn.Module, reference: Dict[str, float]):
    """(y, y_ref) on the first probe size the backbone takes; None if it takes none."""
    for size in _probe_sizes(backbone):
        x = _probe_input(backbone, size)
        try:
            y = _flat_output(backbone(x))
        except (RuntimeError, ValueError, AssertionError):
            continue  # a backbone fixed to another input size
        _set_strength(root, reference)
        return y, _flat_output(backbone(x))
    return None


def _flat_output(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        return torch.cat([_flat_output(o) for o in out])
    if isinstance(out, dict):
        return torch.cat([_flat_output(o) for o in out.values()])
    return out.detach().float().flatten()


@torch.no_grad()
def drift(root: nn.Module, reference: Dict[str, float]) -> Optional[float]:
    """‖y − y_ref‖ / ‖y_ref‖ of ``root``'s backbone output on a probe batch (2 fixed random
    images, eval mode): y as the model is, y_ref with each method at the strength
    ``reference`` gives it (0 where it gives none). None when ``root`` holds no supported
    backbone or the backbone takes none of the probe sizes."""
    backbone = _probe_backbone(root)
    if backbone is None:
        return None
    now = {m: m.strength for m in conditioned_parts(root)}
    training = backbone.training
    backbone.eval()
    state = getattr(root, 'conditioning_state', None)
    if state is not None:
        state._measuring = True
    try:
        out = _outputs(backbone, root, reference)
    finally:
        if state is not None:
            del state._measuring
        for m, a in now.items():
            m.strength = a
        backbone.train(training)
    if out is None:
        return None
    y, y_ref = out
    return float((y - y_ref).norm() / y_ref.norm().clamp(min=1e-12))


def _log(message: str) -> None:
    if 'mmengine' in sys.modules:
        from mmengine.logging import print_log
        print_log(message, logger='current', level=logging.WARNING)
    else:
        logging.getLogger('mmcondattn').warning(message)


def _reference(state: ConditioningState, loaded: Optional[dict], loaded_step: Optional[int]):
    """(strength per method that reproduces the loaded weights' training, what the model
    cannot reproduce, how the loaded weights were trained, in words)."""
    methods = _canonical(state.cfg.methods())
    if loaded is None:
        return {}, {}, 'without conditioning (no record)'
    trained = loaded.get('conditioning', {})
    ws = loaded.get('warm_start')
    alpha = 1.0
    if ws and loaded_step is not None:
        alpha = min(1.0, loaded_step / ws['iters'])
    ref = {m: alpha for m, opts in trained.items() if methods.get(m) == opts}
    missing = {m: o for m, o in trained.items() if m not in ref}
    words = f'with {describe(trained)}' + (f' (warm start at α={alpha:.3g})' if alpha < 1 else '')
    return ref, missing, words


def compare_loaded(root: nn.Module, loaded: dict) -> dict:
    """What a load did to ``root``'s function: ``trained`` (how the loaded weights were
    trained, in words), ``applies`` (what the model applies), ``drift`` (relative output
    change on a probe batch: 0.0 when they agree, None when unmeasurable), ``same``, and
    ``message`` (the log line; None when they agree)."""
    state = root.conditioning_state
    ref, missing, trained = _reference(state, loaded['record'], loaded['step'])
    now = state.strength()
    ws = state.cfg.warm_start
    applies = str(state.cfg) + (f' (warm start, α={now:.3g})' if ws else '')
    same = not missing and set(ref) == set(state.cfg.methods()) and all(a == now
                                                                        for a in ref.values())
    out = dict(trained=trained, applies=applies, same=same, drift=0.0, message=None)
    if same:
        return out
    out['drift'] = change = drift(root, ref)
    what = 'its output changes' + ('' if change is None else
                                   f' by {100 * change:.1f} % on a probe batch')
    if missing:
        what += f'; the checkpoint\'s {describe(missing)} is not applied here'
    todo = (f'the warm start ramps α to 1 over {ws.iters} training forwards'
            if ws else f'to keep the loaded function at step 0, add warm_start=dict(iters=N) to '
            f'conditioning ({GUIDE})')
    out['message'] = (f'{type(root).__name__}: loaded weights trained {trained} into a model '
                      f'that applies {applies}: {what}; {todo}')
    return out


def _after_load(root: nn.Module, incompatible_keys) -> None:
    """Load post-hook of a conditioned root: our keys are never missing / unexpected; the
    loaded record is compared (``conditioning_state.last_load``) and a difference logged."""
    state = root.conditioning_state
    loaded, state.loaded = state.loaded, None
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        keys[:] = [k for k in keys if not k.endswith(STATE_KEYS)]
    if loaded is None or not state.__dict__.pop('_weights_loaded', False):
        return  # a load that did not reach this root's weights
    if state.cfg.warm_start is not None:  # the α of the restored step, before any forward
        _set_strength(root, {m: state.strength() for m in state.cfg.methods()})
    state.last_load = compare_loaded(root, loaded)
    if state.last_load['message']:
        _log(state.last_load['message'])


def report_drift(root: nn.Module) -> Optional[dict]:
    """Log what conditioning does to ``root``'s current weights (trained without it: no
    record), as a load of such weights would; returns :func:`compare_loaded`'s result."""
    result = compare_loaded(root, dict(record=None, step=None))
    if result['message']:
        _log(result['message'].replace('loaded weights trained', 'weights trained', 1))
    return result


def _before_load(root, state_dict, prefix, *args) -> None:
    """Load pre-hook of a conditioned root: note whether the load holds its weights."""
    own = prefix + 'conditioning_state.'
    root.conditioning_state._weights_loaded = any(
        k.startswith(prefix) and not k.startswith(own) for k in state_dict)


def attach_state(root: nn.Module, cfg: ConditioningConfig) -> ConditioningState:
    """Give ``root`` its ``conditioning_state`` (last child, so it loads after the weights),
    the load hooks, and with a warm start the ramp (α starts at 0)."""
    state = ConditioningState(cfg)
    root.conditioning_state = state
    root._register_load_state_dict_pre_hook(_before_load, with_module=True)
    root.register_load_state_dict_post_hook(_after_load)
    if cfg.warm_start is not None:
        _set_strength(root, {m: 0.0 for m in cfg.methods()})
        root.register_forward_pre_hook(_ramp)
    return state
