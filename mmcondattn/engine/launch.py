"""What ``tools/train.py`` and ``tools/test.py`` do before handing a config to mmengine.

Checks a user's inputs up front so that a wrong path or value is one clear line, not a
traceback from deep inside mmengine, and so that a failed start never touches the work dir
(mmengine's runner writes its log folder there before it builds anything): the runner
settings of :data:`RUNNER_NUMBERS`, then a dry build of the model and, for training, of its
optimizer (:func:`preflight`).
"""
import copy
import glob
import logging
import numbers
import os.path as osp
import warnings
from contextlib import contextmanager

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


# runner settings that mmengine and torch take unchecked (max_epochs=-1 trains nothing and
# exits 0) or fail on late (val_interval=0 after the first epoch, weight_decay='big' at the
# first step): key, the kind of number, the least valid value
RUNNER_NUMBERS = (
    ('train_cfg.max_epochs', int, 1),
    ('train_cfg.max_iters', int, 1),
    ('train_cfg.val_interval', int, 1),
    ('train_cfg.val_begin', int, 0),
    ('optim_wrapper.optimizer.lr', float, 0),
    ('optim_wrapper.optimizer.weight_decay', float, 0),
    ('train_dataloader.batch_size', int, 1),
    ('train_dataloader.num_workers', int, 0),
    ('val_dataloader.batch_size', int, 1),
    ('val_dataloader.num_workers', int, 0),
    ('test_dataloader.batch_size', int, 1),
    ('test_dataloader.num_workers', int, 0),
)


def check_runner_numbers(cfg, train: bool) -> None:
    """Raise :class:`UserError` for the first setting of :data:`RUNNER_NUMBERS` that the run
    uses (training, or testing), is given, and is not valid."""
    for key, kind, least in RUNNER_NUMBERS:
        if key.startswith(('train_', 'val_', 'optim_')) != train:
            continue
        value = cfg
        for part in key.split('.'):
            value = value.get(part) if hasattr(value, 'get') else None  # Config, dicts
        number = numbers.Integral if kind is int else numbers.Real
        if value is not None and not (isinstance(value, number) and not isinstance(value, bool)
                                      and value >= least):
            raise UserError(f'{key} must be {"an integer" if kind is int else "a number"} '
                            f'>= {least}, got {value!r}')


@contextmanager
def _quiet():
    """No log lines or warnings from a dry build (the runner's build prints them)."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        logging.disable(logging.NOTSET)


def _dry_build(__config_key__, __config_node__, build):
    """``build(__config_node__)``; the locals name the config key for the error report
    (:mod:`mmcondattn.errors` reads them from the traceback)."""
    return build(__config_node__)


def preflight(cfg, train: bool = True) -> None:
    """Build the model (and, for training, its optimizer) once, as the runner will, before
    it writes anything into the work dir; a user's mistake found there (a bad backbone
    argument, an unregistered ``type``, a string for a number, ...: see
    :func:`mmcondattn.errors.user_error_line`) is raised, to be reported in one line. Any
    other error is left to the runner's own build, which reports it (a dry build runs before
    the process group the runner sets up, on CPU: it may fail where the real one won't).

    Costs one model construction (0.02-0.6 s on CPU for the configs here); the random
    number generators are left as they were.
    """
    import torch
    from mmengine.registry import MODELS, DefaultScope

    from mmcondattn.errors import user_error_line

    model_cfg = copy.deepcopy(cfg.get('model'))
    if not isinstance(model_cfg, dict):
        return
    if cfg.get('data_preprocessor') is not None:  # as the runner does
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    with _quiet(), torch.random.fork_rng(devices=[]), \
            DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        try:
            model = _dry_build('model', model_cfg, MODELS.build)
            if train and isinstance(cfg.get('optim_wrapper'), dict):
                from mmengine.optim import build_optim_wrapper
                _dry_build('optim_wrapper', copy.deepcopy(cfg.optim_wrapper),
                           lambda c: build_optim_wrapper(model, c))
        except Exception as e:
            if user_error_line(e) is not None:
                raise
            # not the user's, or not on the real build: the runner builds and reports it


def prepare_launch(cfg, launcher, logger_lines, train=None):
    """Apply the CPU multi-process shim (see :mod:`mmcondattn.compat`); record what changed;
    then check the config before the runner writes into the work dir
    (:func:`check_runner_numbers`, :func:`preflight`).

    ``train``: whether the run trains (its optimizer is built and checked); None: it does
    unless the config loads a checkpoint without resuming (``tools/test.py``).
    """
    cfg.launcher = launcher
    for change in setup_cpu_distributed(cfg, launcher):
        logger_lines.append(f'CPU distributed run: {change}')
    if train is None:
        train = bool(cfg.get('resume')) or not cfg.get('load_from')
    check_runner_numbers(cfg, train)
    preflight(cfg, train)
    return cfg
