"""The few shims the pinned stack needs (torch 2.13, mmengine 0.10.7, mmcv 2.1.0).

Each shim is applied by :func:`apply_shims`, which ``import mmcondattn`` calls once, so
configs that say ``custom_imports=dict(imports=['mmcondattn'])`` get them in any tool.

1. ``weights_only`` checkpoints. torch >= 2.6 loads with ``weights_only=True`` and
   refuses every pickled global outside its allow-list; mmengine's checkpoints hold a
   ``HistoryBuffer`` and numpy arrays/scalars in ``message_hub``, so ``--resume`` and
   ``load_from`` fail. We allow-list exactly those globals (never turn weights_only off:
   that would run arbitrary code from a checkpoint file), load local files with
   ``weights_only=True`` explicitly, and turn a refusal into one clear error.
2. Multi-process training on a CPU-only machine. mmengine's ``init_dist`` calls
   ``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids=[LOCAL_RANK]``;
   both fail without CUDA. :func:`setup_cpu_distributed` starts a gloo process group
   before the runner does and sets ``device_ids=None``; CUDA runs keep nccl and mmengine's
   defaults. PyTorch's SyncBatchNorm has no CPU kernel, so CPU runs convert it to BN.
"""
import os.path as osp
import pickle

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, corrupt, or refused by ``weights_only``."""


def mmengine_checkpoint_globals():
    """The globals an mmengine 0.10.7 checkpoint pickles beyond tensors and containers."""
    from mmengine.logging.history_buffer import HistoryBuffer
    globs = [HistoryBuffer, np.ndarray, np.dtype, np.core.multiarray._reconstruct,
             np.core.multiarray.scalar]
    # numpy >= 1.25 pickles dtypes as instances of their own classes (np.dtypes.*DType).
    globs += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    return globs


def allow_mmengine_checkpoints():
    """Allow-list exactly the globals of :func:`mmengine_checkpoint_globals`."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


def load_checkpoint_file(filename, map_location=None):
    """``torch.load(filename, weights_only=True)`` with one-line errors.

    Raises:
        CheckpointError: the file is missing, not a torch checkpoint, or holds pickled
            objects outside the allow-list (e.g. a code payload).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise CheckpointError(f'checkpoint not found: {filename}')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        why = next((ln.strip() for ln in first if 'GLOBAL' in ln or 'Unsupported' in ln),
                   first[0] if first else 'unknown')
        raise CheckpointError(
            f'refused to load {filename}: it pickles objects outside the weights_only '
            f'allow-list ({why}). Only load checkpoints you trust; if this one is, convert it '
            f'to a plain state dict first.') from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f'cannot read checkpoint {filename}: it is not a valid torch '
                              f'checkpoint ({str(e).splitlines()[0]})') from None


def _register_local_loader():
    """Route mmengine's local-file loading (load_from, resume, init_cfg) through ours."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file, force=True)


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


def apply_shims():
    """Apply the checkpoint shims once per process (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    allow_mmengine_checkpoints()
    _register_local_loader()
    _APPLIED = True
