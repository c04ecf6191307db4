"""What several test files share: the named conditioning methods of the backbone tests and
``build`` through a registry, ``meta_build`` (shapes only), a tiny Fashion-MNIST fixture,
and tiny classification configs of the three families with an in-process mmengine Runner
(monitor-hook and analysis-tool tests)."""
import copy
import glob
import gzip
import logging
import os.path as osp
import re
import struct
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from mmcondattn.datasets.fashion_mnist import FILES

# 32 px images: ViT / XCiT patch 8 (4×4 tokens), Swin patch 4 and window 4 (2×2 windows, then
# 1). Drop path draws from torch's RNG in training, so a probe that drew too would change losses.
BACKBONES = {
    'vit':
    dict(
        type='ConditionedViT',
        img_size=32,
        patch_size=8,
        drop_path_rate=0.1,
        arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)),
    'swin':
    dict(
        type='ConditionedSwin',
        img_size=32,
        window_size=4,
        out_indices=(1, ),
        drop_path_rate=0.1,
        arch=dict(embed_dims=16, depths=[1, 1], num_heads=[2, 2])),
    'xcit':
    dict(
        type='ConditionedXCiT',
        patch_size=8,
        cls_attn_layers=1,
        drop_path_rate=0.1,
        arch=dict(embed_dims=32, depth=2, num_heads=2)),
}
CHANNELS = {'vit': 32, 'swin': 32, 'xcit': 32}
ALL_METHODS = dict(precond=dict(), spectral=dict(lam=2.0), tokens=dict(solver='svd'))


def cls_config(path,
               family,
               conditioning=None,
               data_root=None,
               hook_interval=2,
               max_iters=4,
               lr=1e-3):
    """Write an mmpretrain classifier config for ``family`` at ``path``; returns ``path``.

    With ``data_root`` (an ImageNet-style folder) it trains on ``train/`` for ``max_iters``
    iterations (batch 4, seed 0) and tests on ``val/``; ``hook_interval=None`` leaves the
    ConditionMonitorHook out."""
    backbone = dict(BACKBONES[family], conditioning=conditioning)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=32),
        dict(type='PackInputs')
    ]
    model = dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling') if family == 'swin' else None,
        head=dict(
            type='LinearClsHead',
            num_classes=3,
            in_channels=CHANNELS[family],
            loss=dict(type='CrossEntropyLoss')),
        data_preprocessor=dict(
            type='ClsDataPreprocessor',
            num_classes=3,
            to_rgb=True,
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375]))
    cfg = dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmcondattn'], allow_failed_imports=False),
        model=model,
        train_dataloader=dict(
            batch_size=4,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(
                type='CustomDataset',
                data_root=str(data_root or 'data/none'),
                data_prefix='train',
                pipeline=pipeline)),
        test_dataloader=dict(
            batch_size=4,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(
                type='CustomDataset',
                data_root=str(data_root or 'data/none'),
                data_prefix='val',
                pipeline=pipeline)),
        test_evaluator=dict(type='Accuracy'),
        test_cfg=dict(),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        val_cfg=None,
        val_dataloader=None,
        val_evaluator=None,
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=lr, weight_decay=0.05)),
        default_hooks=dict(
            logger=dict(interval=1), checkpoint=dict(interval=max_iters, by_epoch=False)),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        custom_hooks=[]
        if hook_interval is None else [dict(type='ConditionMonitorHook', interval=hook_interval)])
    body = '\n'.join(f'{k} = {v!r}' for k, v in cfg.items())
    with open(path, 'w') as f:
        f.write(f"_base_ = 'mmpretrain::_base_/default_runtime.py'\n{body}\n")
    return str(path)


def train(config, work_dir, name):
    """Train ``config`` with mmengine's Runner in this process; returns the runner."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mmcondattn.openmmlab  # noqa: F401
    cfg = Config.fromfile(config)
    cfg.work_dir, cfg.experiment_name = str(work_dir), name  # unique logger / visualizer
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def kappa(m):
    """κ of one matrix straight from torch.linalg.svdvals (float64)."""
    s = torch.linalg.svdvals(m.detach().double())
    return (s[0] / s[-1]).item()


# ---------------------------------------------------------------- backbones and builds
METHODS = {
    'off': None,
    'precond': dict(precond=dict()),
    'spectral': dict(spectral=dict(lam=1.)),
    'tokens': dict(tokens=dict(solver='svd')),
    'all': dict(precond=dict(), spectral=dict(), tokens=dict()),
}


def build(scope, cfg):
    """Build ``cfg`` through the MODELS registry of ``scope``, as that scope's configs do."""
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmpretrain.registry import MODELS
        from mmpretrain.utils import register_all_modules
    register_all_modules()  # also makes `scope` the default scope
    return MODELS.build(copy.deepcopy(cfg))


class meta_build(TorchFunctionMode):
    """Build modules with their tensors on the meta device (shapes only, no memory), except
    the small schedule / index tensors stock constructors read back
    (``torch.linspace(...).item()`` in both Swins, ``torch.arange`` for window indices)."""
    KEEP = (torch.linspace, torch.arange)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get('device') is None \
                and func not in self.KEEP:
            kwargs['device'] = 'meta'
        return func(*args, **kwargs)


# ------------------------------------------------------------------------ Fashion-MNIST
FMNIST_SIZES = dict(train=6, test=4, side=28)


def idx_bytes(array, code=0x08):
    """``array`` (uint8) as an IDX file's bytes (type ``code``)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, code, a.ndim]) + struct.pack(f'>{a.ndim}I', *a.shape) + a.tobytes()


def write_fashion_mnist_fixture(folder, sizes=FMNIST_SIZES, gz=True):
    """The four files of a tiny Fashion-MNIST (image i of a split is filled with i, label
    i % 10); returns ``{name: (images or labels array)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, (split, kind) in FILES.items():
        n = sizes[split]
        if kind == 'images':
            arr = np.arange(
                n, dtype=np.uint8)[:, None, None] * np.ones(
                    (1, sizes['side'], sizes['side']), np.uint8)
            arr[:, 0, :3] = 200 + (split == 'test')  # a corner that tells the splits apart
        else:
            arr = np.arange(n, dtype=np.uint8) % 10
        arrays[name] = arr
        data = idx_bytes(arr)
        if gz:
            with gzip.open(folder / (name + '.gz'), 'wb') as f:
                f.write(data)
        else:
            (folder / name).write_bytes(data)
    return arrays


# ------------------------------------------------------------------------------- docs
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def code_blocks(text):
    """(language, body, marker) of every fenced block, and ('', body, None) of every
    indented block; ``marker`` is the ``<!-- doctest: ... -->`` line right above a fence."""
    lines = text.splitlines()
    i, prev = 0, ''
    while i < len(lines):
        m = re.match(r'^(\s*)(```|~~~)\s*(\w*)', lines[i])
        if m:
            indent, fence, lang = m.groups()
            marker = re.match(r'\s*<!--\s*doctest:\s*(.+?)\s*-->', prev)
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            yield lang, '\n'.join(body), marker.group(1) if marker else None
        elif re.match(r'    \S', lines[i]) and not prev.strip() and \
                not re.match(r'\s*([-*]|\d+\.)\s', lines[i]):
            body = []
            while i < len(lines) and (lines[i].startswith('    ') or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            yield '', '\n'.join(body).strip('\n'), None
            prev = ''
            continue
        prev = lines[i]
        i += 1


def doctest_blocks():
    """``{marker: (doc, language, body)}`` of the blocks of docs/*.md and README.md that a
    ``<!-- doctest: marker -->`` line names."""
    out = {}
    for path in sorted(glob.glob(osp.join(REPO, 'docs', '*.md'))) + [osp.join(REPO, 'README.md')]:
        with open(path, encoding='utf-8') as f:
            text = f.read()
        for lang, body, marker in code_blocks(text):
            if marker:
                out[marker] = (osp.relpath(path, REPO), lang, body)
    return out


# ------------------------------------------------------------------- checkpoint layouts
def official_swin_layout(timm_sd):
    """timm's state dict in the official microsoft/Swin-Transformer layout: patch merging at
    the end of the previous stage, ``head.*``, with the index buffers."""
    out = OrderedDict()
    for k, v in timm_sd.items():
        parts = k.split('.')
        if parts[0] == 'layers' and parts[2] == 'downsample':
            parts[1] = str(int(parts[1]) - 1)
        k = '.'.join(parts).replace('head.fc.', 'head.')
        out[k] = v
    return out


# Python code: a finder that makes the OpenMMLab packages unimportable, as in an environment
# without them (the core-import tests, the GPU check's timm mode)
BLOCK_MM = '''
import sys
BLOCKED = ('mmengine', 'mmcv', 'mmdet', 'mmpretrain')

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{name} is not installed here')
        return None

sys.meta_path.insert(0, Blocker())
'''


def block_mm_dir(folder) -> str:
    """``folder`` with a ``sitecustomize.py`` that runs BLOCK_MM: put it first on a
    subprocess's PYTHONPATH and no OpenMMLab package imports there (nor in its children)."""
    with open(osp.join(folder, 'sitecustomize.py'), 'w') as f:
        f.write(BLOCK_MM)
    return str(folder)


@contextmanager
def mmengine_log():
    """Collect the messages mmengine's current logger emits (every level)."""
    from mmengine.logging import MMLogger
    logger, messages = MMLogger.get_current_instance(), []

    class Collect(logging.Handler):

        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    # the current logger may be a runner's of an earlier test, at level WARNING (log_level)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
