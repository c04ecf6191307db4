"""Conditioning described as data, validated once.

A config names any subset of the three methods, each with its options::

    conditioning = dict(
        precond=dict(eps=1e-6, scale=1., detach=True),              # 1. preconditioned attention
        spectral=dict(mode='identity', lam=10., targets=('q', 'k', 'v'),  # 2. spectral Q/K/V
                      layout='block', update='once'),
        tokens=dict(solver='auto', detach=True, position='before_pos_embed'),  # 3. tokens
        warm_start=dict(iters=1000))  # from weights trained without it: ramp 0 -> 1 (optional)

``dict(precond=dict())`` (or ``precond=True``) means that method with its defaults;
``precond=None`` / ``False`` or leaving the key out means off. :func:`parse_conditioning`
turns such a dict (or None, or an already parsed :class:`ConditioningConfig`) into a frozen
:class:`ConditioningConfig`; a bad entry raises :class:`ConditioningConfigError` whose one-line
message names the bad key or value and lists the valid ones.
"""
import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional, Tuple

__all__ = [
    'ConditioningConfigError', 'PrecondCfg', 'SpectralCfg', 'TokensCfg', 'WarmStartCfg',
    'ConditioningConfig', 'parse_conditioning', 'SPECTRAL_MODES', 'SPECTRAL_TARGETS',
    'SPECTRAL_LAYOUTS', 'SPECTRAL_UPDATES', 'TOKEN_SOLVERS', 'TOKEN_POSITIONS'
]

SPECTRAL_MODES = ('identity', 'svd')
SPECTRAL_TARGETS = ('q', 'k', 'v')
SPECTRAL_LAYOUTS = ('block', 'per_head')
SPECTRAL_UPDATES = ('once', 'every_step')
TOKEN_SOLVERS = ('auto', 'svd', 'gram', 'newton_schulz')
TOKEN_POSITIONS = ('before_pos_embed', 'after_pos_embed')


class ConditioningConfigError(ValueError):
    """A conditioning config entry is invalid; the message names it and the valid choices."""


@dataclass(frozen=True)
class PrecondCfg:
    """Preconditioned attention: O_h ← diag(scale / (‖row‖₂ + eps)) O_h per head.

    eps (float, > 0, default 1e-6), scale (float, > 0, default 1.0), detach (bool, default
    True: no gradient through the preconditioner).
    """
    eps: float = 1e-6
    scale: float = 1.0
    detach: bool = True


@dataclass(frozen=True)
class SpectralCfg:
    """Spectral Q/K/V conditioning: W ← W + C per targeted block of the fused qkv weight.

    mode ('identity' default: C = lam·I | 'svd': C = σ_max·U Vᵀ), lam (float, >= 0, default
    10.0, identity mode only), targets (subset of ('q', 'k', 'v'), default all three),
    layout ('block' default: C per D_out×D_in block, head h gets lam·x of its own channel
    slice | 'per_head': C per head's d×D_in rows, every head gets lam·x[:d], the rectangular
    λI_{D×d} per head), update ('once' default: C set at attach / init / stock load |
    'every_step': svd only, C recomputed from the weights before every training forward).
    """
    mode: str = 'identity'
    lam: float = 10.0
    targets: Tuple[str, ...] = SPECTRAL_TARGETS
    layout: str = 'block'
    update: str = 'once'


@dataclass(frozen=True)
class TokensCfg:
    """Conditioned embedded tokens: X ← X + σ_max(X)·U Vᵀ per image.

    solver ('auto' default: 'gram' on CPU, 'newton_schulz' on GPUs | 'gram': fastest exact
    solver on CPU, Gram matrix in float32 or float64 by its eigenvalue ratio, rank-deficient
    images handed to svd | 'svd': exact, also for rank-deficient X | 'newton_schulz': quintic
    iterations, matmuls only, checked per image, failures handed to svd), detach (bool,
    default True), position ('before_pos_embed' default | 'after_pos_embed'), ns_iters
    (int >= 1, default 10, newton_schulz only).
    """
    solver: str = 'auto'
    detach: bool = True
    position: str = 'before_pos_embed'
    ns_iters: int = 10


@dataclass(frozen=True)
class WarmStartCfg:
    """Warm start over weights trained without conditioning: every method runs at strength
    α = min(1, t / iters), t = the model's training forwards so far (α = 0: the stock function,
    α = 1: the method; see :mod:`.state`).

    iters (int >= 1, default 1000): training forwards of the conditioned model (iterations ×
    gradient-accumulation steps) until full strength.
    """
    iters: int = 1000


_METHODS = {'precond': PrecondCfg, 'spectral': SpectralCfg, 'tokens': TokensCfg}
# options added after conditioning records began (.state): left out of to_dict() at their
# default, so that the record of a model that does not use them reads as before
_LATER_OPTIONS = {'spectral': ('layout', 'update')}
_OPTIONS = dict(_METHODS, warm_start=WarmStartCfg)  # the methods and the warm start


@dataclass(frozen=True)
class ConditioningConfig:
    """Parsed conditioning: each method's options, or None where that method is off."""
    precond: Optional[PrecondCfg] = None
    spectral: Optional[SpectralCfg] = None
    tokens: Optional[TokensCfg] = None
    warm_start: Optional[WarmStartCfg] = None

    @property
    def enabled(self) -> bool:
        """True if any method is on."""
        return any(getattr(self, name) is not None for name in _METHODS)

    @property
    def layer_methods(self) -> bool:
        """True if a method that lives in the attention layers (precond, spectral) is on."""
        return self.precond is not None or self.spectral is not None

    def to_dict(self) -> dict:
        """The config back as a plain dict (what is off is left out, and so are the spectral
        ``layout`` / ``update`` at their defaults: records written before them still match)."""
        return {
            k: _without_later_defaults(k, v)
            for k, v in ((n, getattr(self, n)) for n in _OPTIONS) if v is not None
        }

    def methods(self) -> dict:
        """The methods that are on, as a plain dict (no warm start): what weights trained
        with this config were trained with."""
        return {k: v for k, v in self.to_dict().items() if k in _METHODS}

    def __str__(self) -> str:
        """'precond + spectral(mode=identity, lam=10.0)' style summary ('none' when off)."""
        return describe(self.methods())


def _without_later_defaults(name: str, cfg) -> dict:
    opts = asdict(cfg)
    for key in _LATER_OPTIONS.get(name, ()):
        if opts[key] == getattr(type(cfg), key):  # the dataclass default
            del opts[key]
    return opts


def describe(methods: dict) -> str:
    """'precond + spectral(lam=10.0)' for a :meth:`ConditioningConfig.methods` dict, options
    that differ from the defaults in brackets; 'none' for ``{}``."""
    parts = []
    for name, opts in methods.items():
        default = asdict(_METHODS[name]())
        diff = {k: v for k, v in opts.items() if k in default and _plain(default[k]) != _plain(v)}
        parts.append(name + ('(' + ', '.join(f'{k}={v}'
                                             for k, v in diff.items()) + ')' if diff else ''))
    return ' + '.join(parts) or 'none'


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _choices(valid) -> str:
    return ', '.join(repr(v) for v in valid)


def _fail(where: str, what: str, valid, got=None) -> None:
    hint = ''
    if isinstance(got, str):
        close = difflib.get_close_matches(got, [str(v) for v in valid], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ''
    raise ConditioningConfigError(f'{where}: {what}{hint}; valid: {_choices(valid)}')


def _check_number(where: str, value: Any, low: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConditioningConfigError(
            f'{where}: expected a number, got {type(value).__name__} {value!r}')
    ok = value > low if strict else value >= low
    if not ok:
        raise ConditioningConfigError(
            f"{where}: must be {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _check_int(where: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConditioningConfigError(
            f'{where}: expected an integer >= {low}, got {type(value).__name__} {value!r}')
    return value


def _check_bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConditioningConfigError(
            f'{where}: expected True or False, got {type(value).__name__} {value!r}')
    return value


def _check_choice(where: str, value: Any, valid) -> str:
    if value not in valid:
        _fail(where, f'unknown value {value!r}', valid, value)
    return value


def _check_targets(where: str, value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = (value, )
    if not isinstance(value, (list, tuple)) or not value:
        raise ConditioningConfigError(
            f'{where}: expected a non-empty list/tuple of targets, got {value!r}; '
            f'valid targets: {_choices(SPECTRAL_TARGETS)}')
    for t in value:
        _check_choice(where, t, SPECTRAL_TARGETS)
    if len(set(value)) != len(value):
        raise ConditioningConfigError(f'{where}: duplicate target in {value!r}; valid targets: '
                                      f'{_choices(SPECTRAL_TARGETS)}, each at most once')
    return tuple(t for t in SPECTRAL_TARGETS if t in value)  # canonical order


# one checker per option: (where, value) -> normalised value
_CHECKS = {
    PrecondCfg:
    dict(
        eps=lambda w, v: _check_number(w, v, 0., strict=True),
        scale=lambda w, v: _check_number(w, v, 0., strict=True),
        detach=_check_bool),
    SpectralCfg:
    dict(
        mode=lambda w, v: _check_choice(w, v, SPECTRAL_MODES),
        lam=lambda w, v: _check_number(w, v, 0., strict=False),
        targets=_check_targets,
        layout=lambda w, v: _check_choice(w, v, SPECTRAL_LAYOUTS),
        update=lambda w, v: _check_choice(w, v, SPECTRAL_UPDATES)),
    TokensCfg:
    dict(
        solver=lambda w, v: _check_choice(w, v, TOKEN_SOLVERS),
        detach=_check_bool,
        position=lambda w, v: _check_choice(w, v, TOKEN_POSITIONS),
        ns_iters=lambda w, v: _check_int(w, v, 1)),
    WarmStartCfg:
    dict(iters=lambda w, v: _check_int(w, v, 1)),
}


def _check_spectral(where: str, cfg: SpectralCfg) -> None:
    if cfg.update == 'every_step' and cfg.mode != 'svd':
        raise ConditioningConfigError(
            f"{where}: update='every_step' recomputes the svd correction from the weights, but "
            f"mode={cfg.mode!r} (lam·I) does not depend on them; use mode='svd' or "
            "update='once'")


# checks across the options of one method: (where, parsed config) -> None
_COMBINED = {SpectralCfg: _check_spectral}


def _parse_method(name: str, value: Any):
    cls = _OPTIONS[name]
    where = f'conditioning.{name}'
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if isinstance(value, cls):
        value = asdict(value)  # re-validate: dataclasses can be built with bad values
    if not isinstance(value, Mapping):
        raise ConditioningConfigError(
            f'{where}: expected a dict of options (or True/None), got '
            f'{type(value).__name__} {value!r}; valid options: {_choices(_CHECKS[cls])}')
    checks = _CHECKS[cls]
    opts = {}
    for key, v in value.items():
        if key not in checks:
            _fail(where, f'unknown option {key!r}', [f.name for f in fields(cls)], key)
        opts[key] = checks[key](f'{where}.{key}', v)
    parsed = cls(**opts)
    if cls in _COMBINED:
        _COMBINED[cls](where, parsed)
    return parsed


def parse_conditioning(cfg: Any = None) -> ConditioningConfig:
    """Validate ``cfg`` and return a frozen :class:`ConditioningConfig`.

    Args:
        cfg: None (all off), a :class:`ConditioningConfig` (validated again, returned
            equal), or a mapping ``{method: options}`` with methods among 'precond',
            'spectral', 'tokens' (and 'warm_start', which needs a method) and options a dict
            (``dict()`` = defaults), True (defaults) or None/False (off).

    Raises:
        ConditioningConfigError: naming the bad key/value and listing the valid ones.
    """
    if cfg is None:
        return ConditioningConfig()
    if isinstance(cfg, ConditioningConfig):
        cfg = {name: getattr(cfg, name) for name in _OPTIONS}
    if not isinstance(cfg, Mapping):
        raise ConditioningConfigError(
            f'conditioning: expected a dict of methods or None, got {type(cfg).__name__} '
            f'{cfg!r}; valid methods: {_choices(_METHODS)} (and \'warm_start\')')
    for key in cfg:
        if key not in _OPTIONS:
            _fail('conditioning', f'unknown method {key!r}', list(_OPTIONS), key)
    parsed = ConditioningConfig(**{k: _parse_method(k, v) for k, v in cfg.items()})
    if parsed.warm_start is not None and not parsed.enabled:
        raise ConditioningConfigError(
            'conditioning.warm_start: ramps the methods in, but none is on; add one of '
            f'{_choices(_METHODS)} or leave warm_start out')
    return parsed
