"""What ``tools/train.py`` and ``tools/test.py`` do before handing a config to mmengine.

Checks a user's inputs up front so that a wrong path is one clear line, not a traceback from
deep inside mmengine, and so that a failed start never touches an existing work dir.
"""
import glob
import os.path as osp

from mmcondattn.compat import setup_cpu_distributed
from mmcondattn.errors import UserError, exits_cleanly  # noqa: F401  (the tools import them here)


def load_config(path, cfg_options=None):
    """``Config.fromfile`` with a clear error for a missing or broken config file."""
    from mmengine.config import Config
    if not osp.isfile(path):
        near = sorted(glob.glob(osp.join(osp.dirname(path) or '.', '*.py')))[:5]
        hint = f' (files there: {", ".join(map(osp.basename, near))})' if near else ''
        raise UserError(f'config file not found: {path}{hint}')
    try:
        cfg = Config.fromfile(path)
    except (SyntaxError, KeyError, TypeError, ValueError, FileNotFoundError, ImportError) as e:
        raise UserError(f'cannot parse config {path}: {type(e).__name__}: {e}') from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _datasets(node):
    """Yield every dataset dict nested under a dataloader's ``dataset`` (wrappers included)."""
    while isinstance(node, dict):
        yield node
        node = node.get('dataset')


def check_data(cfg, loaders=('train_dataloader', 'val_dataloader', 'test_dataloader')):
    """Raise :class:`UserError` naming the first dataset file or folder that is missing."""
    for loader in loaders:
        for ds in _datasets((cfg.get(loader) or {}).get('dataset')):
            root = ds.get('data_root') or ''
            paths = []
            if ds.get('ann_file'):
                paths.append(('ann_file', osp.join(root, ds['ann_file'])))
            prefix = ds.get('data_prefix') or ds.get('split')  # mmpretrain: split = sub-folder
            if isinstance(prefix, dict):
                paths += [(f'data_prefix.{k}', osp.join(root, v)) for k, v in prefix.items()
                          if isinstance(v, str) and v]
            elif isinstance(prefix, str):
                paths.append(('folder', osp.join(root, prefix)))
            elif root:
                paths.append(('data_root', root))
            for key, path in paths:
                if not osp.exists(path):
                    raise UserError(
                        f'{loader}: dataset {key} not found at {path!r}. Put the data there, '
                        f'or point elsewhere with --cfg-options {loader}.dataset.data_root=DIR '
                        f'(for COCO also val_evaluator.ann_file / test_evaluator.ann_file)')


def check_work_dir(work_dir, resume):
    """Refuse to start a fresh run in a work dir that already holds checkpoints."""
    ckpts = sorted(glob.glob(osp.join(work_dir, '*.pth')))
    if ckpts and not resume:
        names = ', '.join(osp.basename(c) for c in ckpts[:3]) + (', ...' if len(ckpts) > 3 else '')
        raise UserError(
            f'work dir {work_dir} already holds checkpoints ({names}); '
            'a new run would overwrite them. Pass --resume to continue that run, or choose '
            'another --work-dir')


def check_checkpoint(path):
    """Raise a one-line error if ``path`` is not a loadable checkpoint file."""
    from mmcondattn.compat import load_checkpoint_file
    load_checkpoint_file(path, map_location='cpu')


def prepare_launch(cfg, launcher, logger_lines):
    """Apply the CPU multi-process shim (see :mod:`mmcondattn.compat`); record what changed."""
    cfg.launcher = launcher
    for change in setup_cpu_distributed(cfg, launcher):
        logger_lines.append(f'CPU distributed run: {change}')
    return cfg
