"""The few shims the pinned stack needs (torch 2.13, mmengine 0.10.7, mmcv 2.1.0).

Each shim is applied by :func:`apply_shims`, which ``mmcondattn.openmmlab`` calls once, so
configs that say ``custom_imports=dict(imports=['mmcondattn'])`` get them in any tool.

1. ``weights_only`` checkpoints. torch >= 2.6 loads with ``weights_only=True`` and
   refuses every pickled global outside its allow-list; mmengine's checkpoints hold a
   ``HistoryBuffer`` and numpy arrays/scalars in ``message_hub``, so ``--resume`` and
   ``load_from`` fail. On older torch mmengine unpickles anything (``weights_only`` off).
   mmengine's local-file loader is replaced by one that loads with weights_only semantics
   on every torch and allow-lists exactly those globals while it loads
   (:mod:`mmcondattn.weights_only`: torch's ``safe_globals`` on torch >= 2.5, an allow-list
   unpickler before), and turns a refusal into one clear error.
2. Multi-process training on a CPU-only machine. mmengine's ``init_dist`` calls
   ``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids=[LOCAL_RANK]``;
   both fail without CUDA. :func:`setup_cpu_distributed` starts a gloo process group
   before the runner does and sets ``device_ids=None``; CUDA runs keep nccl and mmengine's
   defaults. PyTorch's SyncBatchNorm has no CPU kernel, so CPU runs convert it to BN.
3. Resizing a Swin / BEiT relative-position bias table on load. mmpretrain 1.2 calls
   scipy's ``interp2d(kind='cubic')``, which scipy 1.14 removed (the stock classes fail
   too). On such a scipy, mmpretrain's resize function runs with :class:`GridCubic`, the
   replacement scipy's transition guide names for regular grids (:func:`patch_interp2d`).
"""
import functools
import os
import os.path as osp
import pickle
import re
import sys
from urllib.parse import urlparse

import numpy as np
import torch

from .weights_only import weights_only_load


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, corrupt, or refused by ``weights_only``."""


def mmengine_checkpoint_globals():
    """The globals an mmengine 0.10.7 checkpoint pickles beyond tensors and containers.

    Measured on a runner checkpoint: ``message_hub`` holds ``HistoryBuffer`` objects (numpy
    arrays, plus their statistics methods pickled as ``getattr(HistoryBuffer, 'mean')``) and
    numpy scalars in ``runtime_info``.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if int(np.__version__.split('.')[0]) >= 2:
        from numpy._core import multiarray
    else:  # numpy 1.x (its numpy._core is only a stub)
        from numpy.core import multiarray
    globs = [
        HistoryBuffer, getattr, bytes, np.ndarray, np.dtype, multiarray._reconstruct,
        multiarray.scalar
    ]
    # numpy >= 1.25 pickles dtypes as instances of their own classes (np.dtypes.*DType).
    globs += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    return globs


class _GuardHistoryBufferMethods:
    """``getattr`` is allow-listed for HistoryBuffer's statistics methods only.

    ``HistoryBuffer.__setstate__`` merges a checkpoint's pickled statistics methods into the
    class-wide registry, which mmengine calls later. Refuse a checkpoint that adds or replaces
    any of them (and undo it), so nothing reached through ``getattr`` can be called.
    """

    def __init__(self, filename):
        from mmengine.logging.history_buffer import HistoryBuffer
        self.filename, self.registry = filename, HistoryBuffer._statistics_methods
        self.defaults = {m: getattr(HistoryBuffer, m) for m in ('min', 'max', 'current', 'mean')}

    def __enter__(self):
        self.before = dict(self.registry)

    def __exit__(self, *exc):
        expected = {**self.defaults, **self.before}
        changed = sorted(k for k, v in self.registry.items() if expected.get(k) is not v)
        if changed:
            self.registry.clear()
            self.registry.update(self.before)
            if exc[0] is None:
                raise CheckpointError(
                    f'refused to load {self.filename}: it replaces HistoryBuffer statistics '
                    f'methods {changed} with objects of its own')


def load_checkpoint_file(filename, map_location=None, scoped=None):
    """``torch.load(filename, weights_only=True)`` with mmengine's globals allowed and
    one-line errors (``scoped``: see :func:`mmcondattn.weights_only.weights_only_load`).

    Raises:
        CheckpointError: the file is missing, not a torch checkpoint, or holds pickled
            objects outside the allow-list (e.g. a code payload).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise CheckpointError(f'checkpoint not found: {filename}')
    try:
        # The allow-list holds only while loading through here, not for every torch.load.
        with _GuardHistoryBufferMethods(filename):
            ckpt = weights_only_load(
                filename, map_location, mmengine_checkpoint_globals(), scoped=scoped)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        glob_ = re.search(r'GLOBAL ([\w.]+)', str(e))
        other = re.search(r'(Can only build [^,]*|Trying to [^.\n]*)', str(e))
        if glob_ or other:
            why = f'global {glob_.group(1)}' if glob_ else other.group(1)
            raise CheckpointError(
                f'refused to load {filename}: it pickles objects outside the weights_only '
                f'allow-list ({why}). Only load checkpoints you trust; if this one is, convert '
                f'it to a plain state dict first.') from None
        raise CheckpointError(f'cannot read checkpoint {filename}: it is not a valid torch '
                              'checkpoint (unpickling failed)') from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f'cannot read checkpoint {filename}: it is not a valid torch '
                              f'checkpoint ({str(e).splitlines()[0]})') from None
    return ckpt


def fetch_checkpoint(url):
    """Download ``url`` once into torch's hub cache (``$TORCH_HOME/hub/checkpoints/<name>``;
    rank 0 first when distributed) and return the local path.

    Raises:
        CheckpointError: the download failed (one line naming the URL).
    """
    from mmengine.dist import barrier, get_dist_info
    path = osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(urlparse(url).path))
    rank, world_size = get_dist_info()
    try:
        for turn in (0, 1):  # rank 0 downloads, then the others find the file
            if (rank == 0) == (turn == 0) and not osp.isfile(path):
                os.makedirs(osp.dirname(path), exist_ok=True)
                torch.hub.download_url_to_file(url, path, progress=False)
            if world_size > 1 and turn == 0:
                barrier()
    except OSError as e:  # urllib's URLError / HTTPError, socket errors
        why = str(getattr(e, 'reason', None) or e).splitlines()[0]
        raise CheckpointError(f'cannot download the checkpoint {url} ({why}); download it '
                              f'where the network allows and put it at {path}, or pass its '
                              'local path instead of the URL') from None
    return path


def load_checkpoint_url(url, map_location=None):
    """mmengine's URL loader with weights_only: :func:`fetch_checkpoint`, then
    :func:`load_checkpoint_file` (mmengine's own calls ``torch.hub`` with weights_only off
    on torch < 2.6)."""
    return load_checkpoint_file(fetch_checkpoint(url), map_location)


def _register_loaders():
    """Route mmengine's local-file and URL loading (load_from, resume, init_cfg) through ours."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file, force=True)
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'), loader=load_checkpoint_url, force=True)


def setup_cpu_distributed(cfg, launcher):
    """Prepare ``cfg`` for a multi-process run on a machine without CUDA.

    Starts a gloo process group from the torchrun environment (mmengine then skips its own
    CUDA-only ``init_dist``), makes DDP wrap CPU modules (``device_ids=None``) and converts
    SyncBN to BN in the model config. Returns a list of what it changed (for the log);
    empty when CUDA is available or the run is not distributed.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return []
    import torch.distributed as dist
    changed = []
    if not dist.is_initialized():
        if launcher != 'pytorch':
            raise RuntimeError(f'launcher {launcher!r} needs CUDA; on CPU use --launcher pytorch '
                               '(tools/dist_train.sh does)')
        dist.init_process_group(backend='gloo')
        changed.append('process group: gloo (no CUDA)')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    changed.append('DDP device_ids=None (CPU modules)')
    if replace_syncbn(cfg.model):
        changed.append('SyncBN -> BN (SyncBatchNorm has no CPU implementation)')
    return changed


def replace_syncbn(node):
    """Replace every ``type='SyncBN'`` in a (nested) config by ``'BN'``; True if any."""
    found = False
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            found = True
        for v in node.values():
            found |= replace_syncbn(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            found |= replace_syncbn(v)
    return found


_APPLIED = False


class GridCubic:
    """scipy's removed ``interp2d(x, y, z, kind='cubic')`` on a regular grid, as a cubic
    ``RectBivariateSpline`` interpolating z (s=0; the same FITPACK routine interp2d used).

    Args:
        x (len nx), y (len ny): increasing grid coordinates; z: values (ny, nx).
    Calling it with (x_new, y_new) gives the values (len y_new, len x_new).
    """

    def __init__(self, x, y, z, kind: str = 'cubic'):
        if kind != 'cubic':
            raise NotImplementedError(f"GridCubic replaces interp2d(kind='cubic') only, "
                                      f'not kind={kind!r}')
        from scipy.interpolate import RectBivariateSpline
        self._spline = RectBivariateSpline(
            np.asarray(x), np.asarray(y), np.asarray(z).T, kx=3, ky=3, s=0)

    def __call__(self, x_new, y_new):
        return self._spline(np.asarray(x_new), np.asarray(y_new)).T


def _with_grid_cubic(fn):
    """``fn`` run with ``scipy.interpolate.interp2d`` = :class:`GridCubic`, restored after."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from scipy import interpolate
        removed = interpolate.interp2d
        interpolate.interp2d = GridCubic
        try:
            return fn(*args, **kwargs)
        finally:
            interpolate.interp2d = removed

    wrapper.__wrapped_for_interp2d__ = True
    return wrapper


def patch_interp2d() -> bool:
    """On scipy >= 1.14, give mmpretrain's ``resize_relative_position_bias_table`` (in every
    module that imported it) :class:`GridCubic` for the call. Returns whether it patched."""
    try:
        import mmpretrain.models.backbones  # noqa: F401  the modules that import it
        import scipy
        from mmpretrain.models.utils import embed
    except ImportError:
        return False
    if tuple(int(p) for p in re.findall(r'\d+', scipy.__version__)[:2]) < (1, 14):
        return False
    original = embed.resize_relative_position_bias_table
    if getattr(original, '__wrapped_for_interp2d__', False):
        return True
    wrapped = _with_grid_cubic(original)
    for module in list(sys.modules.values()):
        if (getattr(module, '__name__', '').startswith('mmpretrain')
                and getattr(module, 'resize_relative_position_bias_table', None) is original):
            module.resize_relative_position_bias_table = wrapped
    return True


def apply_shims():
    """Route mmengine's checkpoint loading (files and URLs) through ours, and mend
    mmpretrain's table resize on a new scipy (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _register_loaders()
    patch_interp2d()
    _APPLIED = True
