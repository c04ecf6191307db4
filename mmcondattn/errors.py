"""How the tools report a user's mistake: :class:`UserError` and :func:`exits_cleanly`.

Torch-only (no mmengine): the GPU check's timm mode runs where the OpenMMLab stack is absent.
What was being built when an error came is read from the traceback (the frames of mmengine's
``build_from_cfg``, and a root frame that names the config key: one of the runner's
``build_*`` methods, or any frame with a local ``__config_key__``), so no mmengine import is
needed here either.
"""
import difflib
import functools
import inspect
import numbers
import sys
from typing import Any, List, Optional, Tuple

__all__ = ['UserError', 'exits_cleanly', 'user_error_line', 'building_what']


class UserError(Exception):
    """A wrong input from the user; the tools print its message alone and exit with 2."""


def exits_cleanly(main):
    """Run ``main``; report a user's mistake as one line and exit 2.

    Those are (:func:`user_error_line`): :class:`UserError`, a checkpoint that cannot be
    read, a bad conditioning entry, a broken stack, a bad backbone argument or unreachable
    pretrained URL (:class:`mmcondattn.models.backbones.utils.BackboneConfigError`), a
    ``type`` no registry knows (the line names the closest registered names), a string
    where a constructor takes a number, and an optimizer's own refusal of a value. Any
    other error keeps its traceback, after a first line that says which config key was
    being built, if one was."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as e:
            line = user_error_line(e)
            if line is None:
                what = building_what(e)
                if what:
                    print(f'error while building {what}:', file=sys.stderr)
                raise
            print(f'error: {line}', file=sys.stderr)
            sys.exit(2)

    return wrapper


def _plain_user_errors() -> tuple:
    """Exception classes whose message is the whole report. Looked up among the imported
    modules: an exception's class was imported when it was raised (and the backbones'
    module imports mmdet and mmpretrain)."""
    return (UserError, ) + tuple(
        getattr(sys.modules[module], name) for module, name in (
            ('mmcondattn.compat', 'CheckpointError'),
            ('mmcondattn.conditioning.options', 'ConditioningConfigError'),
            ('mmcondattn.stack', 'StackError'),
            ('mmcondattn.models.backbones.utils', 'BackboneConfigError')) if module in sys.modules)


def user_error_line(e: BaseException) -> Optional[str]:
    """The one-line report of ``e`` if it is the user's mistake, else None. An error raised
    while a config was built names its key (``model.backbone: ...``)."""
    located = _locate(e)
    if isinstance(e, _plain_user_errors()):
        return f'{located.path}: {e}' if located and located.path else str(e)
    if located is None:
        return None
    if isinstance(e, KeyError) and located.frame is _frames(e)[-1]:
        return _unregistered(located)
    if isinstance(e, (TypeError, ValueError)) and located.constructed:
        return _bad_number(e, located)
    return None


def building_what(e: BaseException) -> Optional[str]:
    """'model.backbone (type='X')': what was being built when ``e`` came, or None."""
    located = _locate(e)
    if located is None:
        return None
    kind = f'type={located.type!r}' if located.type is not None else 'a config'
    if located.path:
        return f'{located.path} ({kind})'
    registry = located.frame.f_locals.get('registry')
    return f'{kind} of the {getattr(registry, "name", "?")} registry'


# ----------------------------------------------------------------------------- traceback


def _frames(e: BaseException) -> list:
    frames, tb = [], e.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


# the runner's build methods: config key, and the local that holds its config
_RUNNER_ROOTS = {
    'build_model': ('model', 'model'),
    'build_optim_wrapper': ('optim_wrapper', 'optim_wrapper'),
    'build_param_scheduler': ('param_scheduler', 'scheduler'),
}
_BUILD_FUNCTIONS = ('build_from_cfg', 'build_scheduler_from_cfg')


class _Located:
    """The innermost config being built: its frame, config key path, config and class."""

    def __init__(self, frame, path: Optional[str], cfg):
        self.frame, self.path, self.cfg = frame, path, cfg
        self.type = cfg.get('type') if isinstance(cfg, dict) else None
        self.cls = frame.f_locals.get('obj_cls')
        self.constructed = False  # set when the error came from inside cls's constructor


def _locate(e: BaseException) -> Optional[_Located]:
    """Walk the traceback: follow the configs being built from the root key down."""
    frames = _frames(e)
    path: Optional[List[str]] = None
    node: Any = None
    found: Optional[_Located] = None
    for i, frame in enumerate(frames):
        module = frame.f_globals.get('__name__', '')
        name = frame.f_code.co_name
        local = frame.f_locals
        if isinstance(local.get('__config_key__'), str):
            path, node = [local['__config_key__']], local.get('__config_node__')
        elif module == 'mmengine.runner.runner' and name in _RUNNER_ROOTS:
            key, var = _RUNNER_ROOTS[name]
            path, node = [key], local.get(var)
        elif module == 'mmengine.registry.build_functions' and name in _BUILD_FUNCTIONS and \
                isinstance(local.get('cfg'), dict):
            cfg = local['cfg']
            if path is not None and node is not None and not (cfg is node or _eq(cfg, node)):
                step = _find(node, cfg)
                if step is None:
                    path, node = None, None  # lost the way: no key path from here on
                else:
                    path, node = path + step[0], step[1]
            found = _Located(frame, '.'.join(path) if path else None, cfg)
            # the error came from inside the class's constructor (not from a nested build)
            found.constructed = found.cls is not None and i + 1 < len(frames) and \
                _is_in(frames[i + 1:], found.cls)
    return found


def _is_in(frames: list, cls) -> bool:
    """Whether the frame a build called runs ``cls``'s constructor (or ``cls`` itself, for a
    function the registry holds)."""
    init = getattr(cls, '__init__', None) if isinstance(cls, type) else cls
    return getattr(init, '__code__', None) is frames[0].f_code


def _find(node: Any, cfg: dict, depth: int = 3) -> Optional[Tuple[List[str], Any]]:
    """Where ``cfg`` (or the copy a builder made of it) sits in ``node``: key path, node."""
    candidates = []  # (score, path, sub-node)

    def walk(n, at, d):
        items = n.items() if isinstance(n, dict) else enumerate(n) \
            if isinstance(n, (list, tuple)) else ()
        for k, v in items:
            if v is cfg:
                candidates.append((float('inf'), at + [str(k)], v))
            elif isinstance(v, dict) and v.get('type') == cfg.get('type'):
                same = sum(1 for kk, vv in v.items() if kk in cfg and _eq(cfg[kk], vv))
                candidates.append((same, at + [str(k)], v))
            if d > 1 and isinstance(v, (dict, list, tuple)):
                walk(v, at + [str(k)], d - 1)

    walk(node, [], depth)
    if not candidates:
        return None
    _, path, sub = max(candidates, key=lambda c: c[0])
    return path, sub


def _eq(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


# ----------------------------------------------------------------------------- the lines


def _registered_names(registry) -> List[str]:
    names, r = [], registry
    while r is not None:  # a registry looks up its parents' names too
        names += list(getattr(r, 'module_dict', {}))
        r = getattr(r, 'parent', None)
    return names


def _unregistered(located: _Located) -> Optional[str]:
    """A ``type`` no registry has: the closest registered names."""
    local = located.frame.f_locals
    wrong, registry = local.get('obj_type'), local.get('registry')
    if not isinstance(wrong, str) or registry is None or \
            not hasattr(registry, 'module_dict'):
        return None
    names = _registered_names(registry)
    lower = {}
    for n in names:
        lower.setdefault(n.lower(), n)
    close = [
        lower[n] for n in difflib.get_close_matches(wrong.lower(), list(lower), n=3, cutoff=0.6)
    ]
    root = registry
    while getattr(root, 'parent', None) is not None:
        root = root.parent
    elsewhere = [
        f'{scope}.{wrong}' for scope, child in getattr(root, 'children', {}).items()
        if scope != registry.scope and wrong in child.module_dict
    ]
    key = f'{located.path}.type' if located.path else 'type'
    line = f"{key}={wrong!r} is not in {registry.scope}'s {registry.name} registry"
    if close or elsewhere:
        return line + f'; did you mean {" or ".join(repr(n) for n in close + elsewhere)}?'
    return line + ('; no registered name is close to it (is the module that registers it in '
                   "the config's custom_imports?)")


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _takes_number(param: inspect.Parameter) -> bool:
    """Whether a parameter's default is a number or its annotation says int / float (alone,
    or in a Union / Optional)."""
    if _is_number(param.default):
        return True
    note = param.annotation
    if isinstance(note, str):  # postponed annotations
        return note.strip() in ('int', 'float', 'Optional[int]', 'Optional[float]')
    kinds = getattr(note, '__args__', None) or (note, )
    return any(k in (int, float) for k in kinds) and str not in kinds


def _bad_number(e: BaseException, located: _Located) -> Optional[str]:
    """A string where the class takes a number (its default is one); or a value a torch
    optimizer refuses (its ValueError says which)."""
    cls, cfg = located.cls, located.cfg
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    bad = [(k, v) for k, v in cfg.items()
           if isinstance(v, str) and k in params and _takes_number(params[k])]
    if bad and isinstance(e, TypeError):
        key, value = bad[0]
        at = f'{located.path}.{key}' if located.path else key
        default = params[key].default
        return (f'{at} must be a number' +
                (f" ({cls.__name__}'s default: {default!r})" if _is_number(default) else '') +
                f', got {value!r}')
    if isinstance(e, ValueError) and any(
            c.__module__.startswith('torch.optim') and c.__name__ == 'Optimizer'
            for c in getattr(cls, '__mro__', ())):
        return f'{located.path or "optimizer"}: {cls.__name__}: {e}'
    return None
