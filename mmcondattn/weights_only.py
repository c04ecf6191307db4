"""``torch.load`` with ``weights_only`` semantics and an extra allow-list, on every torch.

torch >= 2.5 scopes extra allowed globals to one load (``torch.serialization.safe_globals``).
Older torch cannot: ``add_safe_globals`` arrived in 2.4 (and is process-wide), and before 2.4
the weights_only unpickler builds (``BUILD``) only tensors and dicts, so no numpy array or
``HistoryBuffer`` can be loaded with ``weights_only=True`` at all. There
:func:`weights_only_load` hands ``torch.load`` a pickle module whose unpickler enforces the
rules of torch's weights_only unpickler with the allow-list made explicit:

* ``GLOBAL`` resolves only allow-listed names: torch's own set (tensors, storages, dtypes,
  ``OrderedDict``) plus the extra globals;
* ``REDUCE`` / ``NEWOBJ`` call only allow-listed objects (so nothing reached through an
  allowed ``getattr`` can be called);
* ``BUILD`` sets state only on instances of allow-listed classes, tensors and dicts;
  ``INST`` / ``OBJ`` (protocol 0/1 object creation) are refused.

Needs only torch and the standard library.
"""
import _compat_pickle
import collections
import pickle
import types
from typing import Iterable, Optional

import torch

__all__ = ['weights_only_load', 'has_scoped_allowlist', 'allowlist_pickle_module']


def has_scoped_allowlist() -> bool:
    """Whether this torch scopes extra weights_only globals to one load (torch >= 2.5)."""
    return hasattr(torch.serialization, 'safe_globals')


def _qualname(obj) -> str:
    return f'{obj.__module__}.{obj.__qualname__}'


def _torch_allowed_globals() -> dict:
    """torch's own weights_only allow-list (name -> object), as this torch defines it, plus
    what newer torch allows by default (torch 2.13 over 2.1): ``_codecs.encode`` (protocol-2
    bytes), ``bytearray``, ``complex``, ``set``, ``collections.Counter`` (e.g. a
    MultiStepLR's milestones) and ``torch.device``."""
    import _codecs

    from torch import _weights_only_unpickler as wou
    allowed = dict(wou._get_allowed_globals())
    for obj in (_codecs.encode, bytearray, complex, set, collections.Counter, torch.device):
        allowed.setdefault(_qualname(obj), obj)
    return allowed


def _numpy_aliases(name: str):
    """numpy 2 pickles ``numpy._core.*`` where numpy 1 wrote ``numpy.core.*``: accept both."""
    for old, new in (('numpy.core.', 'numpy._core.'), ('numpy._core.', 'numpy.core.')):
        if name.startswith(old):
            yield new + name[len(old):]


class _Opcodes(dict):
    """Opcode -> handler; an unknown opcode is an UnpicklingError, as in C pickle."""

    def __missing__(self, key):
        raise pickle.UnpicklingError(f'invalid load key, {bytes([key])!r}.')


class _AllowListUnpickler(pickle._Unpickler):
    """Pure-Python unpickler that enforces :attr:`allowed` (see the module docstring)."""

    allowed: dict = {}  # full name -> object; set per load by allowlist_pickle_module
    allowed_ids: frozenset = frozenset()  # ids of those objects (the dict keeps them alive)
    dispatch = _Opcodes(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle itself maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f'{module}.{name}'
        for key in (full, *_numpy_aliases(full)):
            if key in self.allowed:
                return self.allowed[key]
        raise pickle.UnpicklingError(f'Weights only load failed: Unsupported global: GLOBAL '
                                     f'{full} is not in the allow-list')

    def _check_callable(self, func):
        if id(func) not in self.allowed_ids:
            raise pickle.UnpicklingError(
                f'Weights only load failed: Trying to call reduce for unrecognized function '
                f'{func!r}')

    def _load_reduce(self):
        self._check_callable(self.stack[-2])
        pickle._Unpickler.load_reduce(self)

    def _load_newobj(self):
        self._check_callable(self.stack[-2])
        pickle._Unpickler.load_newobj(self)

    def _load_newobj_ex(self):
        self._check_callable(self.stack[-3])
        pickle._Unpickler.load_newobj_ex(self)

    def _load_build(self):
        inst = self.stack[-2]
        if not (isinstance(inst, (torch.Tensor, collections.OrderedDict))
                or id(type(inst)) in self.allowed_ids):
            raise pickle.UnpicklingError(
                f'Weights only load failed: Can only build tensors, dicts and allow-listed '
                f'classes, but got {type(inst)}')
        pickle._Unpickler.load_build(self)

    def _refuse(self):
        raise pickle.UnpicklingError('Weights only load failed: Trying to create an object '
                                     'with the INST/OBJ opcodes')

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.INST[0]] = _refuse
    dispatch[pickle.OBJ[0]] = _refuse


def allowlist_pickle_module(extra_globals: Iterable = ()) -> types.ModuleType:
    """A pickle module for ``torch.load(pickle_module=...)`` that unpickles only torch's
    weights_only globals and ``extra_globals`` (objects, named by module + qualname)."""
    allowed = _torch_allowed_globals()
    allowed.update({_qualname(g): g for g in extra_globals})
    unpickler = type('AllowListUnpickler', (_AllowListUnpickler, ),
                     dict(allowed=allowed, allowed_ids=frozenset(map(id, allowed.values()))))
    module = types.ModuleType('mmcondattn_allowlist_pickle')
    module.Unpickler = unpickler
    module.UnpicklingError = pickle.UnpicklingError
    module.load = lambda file, **kwargs: unpickler(file, **kwargs).load()
    return module


def weights_only_load(f,
                      map_location=None,
                      extra_globals: Iterable = (),
                      scoped: Optional[bool] = None):
    """``torch.load(f)`` refusing every pickled global but torch's and ``extra_globals``.

    Args:
        scoped: use torch's ``safe_globals`` (default where this torch has it) or the
            allow-list unpickler of this module (``False``; the only way on torch < 2.5).

    Raises:
        pickle.UnpicklingError: the file pickles something outside the allow-list.
    """
    extra_globals = list(extra_globals)
    if scoped is None:
        scoped = has_scoped_allowlist()
    if scoped:
        with torch.serialization.safe_globals(extra_globals):
            return torch.load(f, map_location=map_location, weights_only=True)
    # torch's own weights_only check gives way to the explicit pickle module, which enforces
    # the same rules (the module docstring)
    return torch.load(
        f, map_location=map_location, pickle_module=allowlist_pickle_module(extra_globals))
