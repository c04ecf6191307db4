"""Speed and memory of conditioned models against their unconditioned twins (docs/performance.md).

The logic of ``tools/analysis_tools/benchmark_conditioning.py``. Each backbone row builds a
plain backbone and its conditioned twin with the same weights (the plain state dict is loaded
into the conditioned one), warms both up, then times them alternately in this process (the
order flips every round) and reports median times and the ratio conditioned / plain (the
median over rounds of the two back-to-back calls' ratio, with its interquartile range) of:

* ``train``: one training step of the backbone: forward, ``sum(out.sum())``, backward;
* ``infer``: one forward in eval mode under ``torch.no_grad()``;
* ``peak``: peak memory of the training step = bytes of the model's parameters and buffers
  plus the largest growth of allocated bytes during the step (gradients included). CUDA: the
  caching allocator's ``max_memory_allocated``. CPU: every allocation and free of torch's CPU
  allocator as ``torch.profiler`` records them (``profile_memory=True``), summed in time order
  (an allocator peak, like CUDA's; RSS would also see the allocator's caching and the Python
  heap).

Whole-detector rows time one Mask R-CNN training iteration (data preprocessor, ``model.loss``,
backward) on a synthetic batch built with mmdet's ``DetDataSample`` / ``InstanceData``, for the
repository's configs. The token-solver table times each solver of method 3 on the real patch
tokens of each backbone row and checks κ(X + C) <= 2.

This is a benchmark: it measures and reports, it asserts nothing about speed.
"""
import copy
import datetime
import gc
import itertools
import logging
import os
import os.path as osp
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .conditioning import condition_number, fold_conditioning, token_correction
from .conditioning.options import TOKEN_SOLVERS

__all__ = [
    'FAMILIES', 'METHODS', 'SIZES', 'BenchmarkSettings', 'check_choices', 'build_twins',
    'Timing', 'time_alternating', 'peak_memory', 'bench_backbone', 'bench_layer',
    'bench_detectors', 'bench_solvers', 'run_benchmark', 'render_markdown', 'write_markdown'
]

FAMILIES = ('vit', 'swin', 'xcit')
# method: (conditioning, fold the spectral corrections after loading the weights)
METHODS = {
    'precond': (dict(precond=dict()), False),
    'spectral': (dict(spectral=dict()), False),
    'spectral_folded': (dict(spectral=dict()), True),
    'tokens': (dict(tokens=dict()), False),
    'all': (dict(precond=dict(), spectral=dict(), tokens=dict()), False),
}
SIZES = ('cls', 'det')
# family: (registered name, arch, tiny arch for tests)
BACKBONES = {
    'vit': ('ConditionedViT', 'deit-small',
            dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)),
    'swin': ('ConditionedSwin', 'tiny',
             dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))),
    'xcit': ('ConditionedXCiT', 's12', dict(embed_dims=64, depth=4, num_heads=4)),
}
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# whole Mask R-CNN: (label, config); ratios are against the first row (plain XCiT-S12)
DETECTORS = (
    ('XCiT-S12/16 plain', 'configs/xcit/mask-rcnn_xcit-s12-p16_fpn_ms-crop-3x_coco.py'),
    ('XCiT-S12/16 precond', 'configs/xcit/mask-rcnn_xcit-s12-p16_precond_fpn_ms-crop-3x_coco.py'),
    ('Swin-T stock mmdet (reference)', 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'),
)
# tests: RoI sampling and the box head's width cut too (the stock heads dominate at 64 px)
TINY_DETECTOR_HEADS = dict(rpn_samples=32, proposals=64, rcnn_samples=16, fc_channels=64)
TINY_DETECTOR_BACKBONES = {  # backbone overrides, neck input channels
    'ConditionedXCiT': (dict(arch=BACKBONES['xcit'][2], out_indices=(0, 1, 2, 3)), [64] * 4),
    'SwinTransformer': (dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
                        [32, 64, 128, 256]),
}


def check_choices(what: str, values: Sequence[str], valid: Sequence[str]) -> List[str]:
    """``values`` as a list; one ValueError naming the bad ones and listing ``valid``."""
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f'unknown {what} {", ".join(map(repr, bad))}; valid: '
                         f'{", ".join(valid)}')
    return list(values)


@dataclass
class BenchmarkSettings:
    """What to run. ``img_size``: size -> (H, W); batch sizes: per size."""
    families: Sequence[str] = FAMILIES
    methods: Sequence[str] = tuple(METHODS)
    sizes: Sequence[str] = SIZES
    img_size: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    batch_size: Dict[str, int] = field(default_factory=dict)
    repeats: int = 7
    warmup: int = 2
    device: str = 'cpu'
    tiny: bool = False
    layers: bool = True
    detectors: bool = True
    solvers: bool = True

    def __post_init__(self):
        self.families = check_choices('family', self.families, FAMILIES)
        self.methods = check_choices('method', self.methods, tuple(METHODS))
        self.sizes = check_choices('size', self.sizes, SIZES)
        check_choices('size', list(self.img_size) + list(self.batch_size), SIZES)
        cuda = self.device.startswith('cuda')
        if self.tiny:
            default_hw = dict(cls=(32, 32), det=(64, 64))
        else:  # detection: 512 px on CPU, the COCO test scale on GPU
            default_hw = dict(cls=(224, 224), det=(800, 1333) if cuda else (512, 512))
        self.img_size = {**default_hw, **self.img_size}
        default_batch = dict(cls=8 if cuda else 4, det=2 if cuda else 1)
        self.batch_size = {**default_batch, **self.batch_size}
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f'repeats must be >= 1 and warmup >= 0, got {self.repeats}, '
                             f'{self.warmup}')


# --- building -------------------------------------------------------------------------------

def _build(size: str, cfg: dict) -> nn.Module:
    """Build from mmpretrain's MODELS (cls) or mmdet's (det), in that default scope."""
    from mmengine.registry import DefaultScope
    if size == 'cls':
        from mmpretrain.registry import MODELS
    else:
        from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope(MODELS.scope):
        return MODELS.build(copy.deepcopy(cfg))


def backbone_cfg(family: str, size: str, hw: Tuple[int, int], tiny: bool) -> dict:
    """Config of ``family``'s backbone in the classification or detection form."""
    name, arch, tiny_arch = BACKBONES[family]
    cfg = dict(type=name, arch=tiny_arch if tiny else arch)
    if size == 'cls' and family in ('vit', 'swin'):
        cfg['img_size'] = hw
    if size == 'cls' and family == 'swin':
        cfg['pad_small_map'] = True  # tiny inputs: stages smaller than a window
    if size == 'det' and family == 'xcit' and tiny:
        cfg['out_indices'] = (0, 1, 2, 3)
    return cfg


def build_plain(family: str, size: str, hw: Tuple[int, int], tiny: bool = False,
                seed: int = 0) -> nn.Module:
    """The unconditioned backbone, initialised (``init_weights``) from ``seed``."""
    torch.manual_seed(seed)
    plain = _build(size, backbone_cfg(family, size, hw, tiny))
    plain.init_weights()
    return plain


def build_twins(family: str, size: str, method: str, hw: Tuple[int, int], tiny: bool = False,
                device: str = 'cpu', seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    """(plain, conditioned) backbones with the same weights, on ``device``.

    The plain one is initialised (``init_weights``) and its state dict loaded into the
    conditioned one; only the spectral ``*.correction`` buffers may be missing from it.
    ``spectral_folded`` folds the corrections after loading.
    """
    conditioning, fold = METHODS[method]
    plain = build_plain(family, size, hw, tiny, seed=seed)
    cond = _build(size, dict(backbone_cfg(family, size, hw, tiny), conditioning=conditioning))
    missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
    if unexpected or any(not k.endswith('correction') for k in missing):
        raise RuntimeError(f'{family}/{method}: the twins differ in keys: missing {missing}, '
                           f'unexpected {unexpected}')
    if fold:
        fold_conditioning(cond)
    return plain.to(device), cond.to(device)


# --- measuring ------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _outputs(out) -> List[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else [o for o in out]


def _call(model: nn.Module, x, kwargs: Optional[dict]):
    return model(*x, **(kwargs or {})) if isinstance(x, tuple) else model(x)


def train_step(model: nn.Module, x, kwargs: Optional[dict] = None) -> None:
    """Forward, sum of every output, backward (gradients allocated afresh). ``x``: the input,
    or a tuple of positional inputs (then ``kwargs`` too)."""
    model.train()
    model.zero_grad(set_to_none=True)
    sum(o.float().sum() for o in _outputs(_call(model, x, kwargs))).backward()


def infer_step(model: nn.Module, x, kwargs: Optional[dict] = None) -> None:
    """One forward in eval mode without autograd (inputs as :func:`train_step`)."""
    model.eval()
    with torch.no_grad():
        _call(model, x, kwargs)


@dataclass
class Timing:
    """Seconds of each model's calls, ``samples[model][round]``, timed in alternation.

    Ratios pair the calls of one round (model i against ``ref``, measured back to back), so
    a slow drift of the machine cancels; their quartiles say how far one ratio is to trust.
    """
    samples: List[List[float]]

    def median(self, i: int) -> float:
        return statistics.median(self.samples[i])

    def ratios(self, i: int = 1, ref: int = 0) -> List[float]:
        return [t / r for t, r in zip(self.samples[i], self.samples[ref])]

    def ratio(self, i: int = 1, ref: int = 0) -> float:
        """Median over rounds of time(i) / time(ref)."""
        return statistics.median(self.ratios(i, ref))

    def ratio_iqr(self, i: int = 1, ref: int = 0) -> Tuple[float, float]:
        """First and third quartile of the paired ratios (both the ratio for one round)."""
        r = self.ratios(i, ref)
        if len(r) < 2:
            return r[0], r[0]
        q1, _, q3 = statistics.quantiles(r, n=4, method='inclusive')
        return q1, q3

    def pair(self, i: int, ref: int = 0) -> 'Timing':
        """The timing of ``ref`` and ``i`` alone (their rounds kept paired)."""
        return Timing([self.samples[ref], self.samples[i]])


def time_alternating(models: Sequence[nn.Module], step: Callable[[nn.Module], None],
                     warmup: int, repeats: int, device: torch.device) -> Timing:
    """Seconds of ``step(model)`` per model and round: ``warmup`` untimed calls each, then
    ``repeats`` rounds calling every model once, in reversed order every other round."""
    for m in models:
        for _ in range(warmup):
            step(m)
    times = [[] for _ in models]
    for r in range(repeats):
        order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
        for i in order:
            _sync(device)
            t0 = time.perf_counter()
            step(models[i])
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return Timing(times)


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size()
               for t in itertools.chain(model.parameters(), model.buffers()))


def _event_span_ns(event):
    """(start, end) of a profiler event in ns (torch < 2.2 events only have ``*_us``)."""
    if hasattr(event, 'start_ns'):
        return event.start_ns(), event.end_ns()
    return event.start_us() * 1000, (event.start_us() + event.duration_us()) * 1000


def _cpu_allocation_growth(prof, names: Sequence[str]) -> List[int]:
    """Largest growth of bytes held by torch's CPU allocator inside each profiled range."""
    events = list(prof.profiler.kineto_results.events())
    mem = sorted(((_event_span_ns(e)[0], e.nbytes()) for e in events  # allocations before frees
                  if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU),
                 key=lambda tn: (tn[0], -tn[1]))
    growth = []
    for name in names:
        start, end = _event_span_ns(next(e for e in events if e.name() == name))
        held = peak = 0
        for t, nbytes in mem:
            if start <= t <= end:
                held += nbytes
                peak = max(peak, held)
        growth.append(peak)
    return growth


def peak_memory(models: Sequence[nn.Module], step: Callable[[nn.Module], None],
                device: torch.device) -> List[int]:
    """Bytes per model: its parameters and buffers + the peak growth of allocated memory
    during one ``step(model)`` (gradients are freed first, so they count as growth). On CPU
    all models run in one profiler session (starting one costs seconds)."""
    names = [f'peak_memory_{i}' for i in range(len(models))]
    growth = []
    if device.type == 'cuda':
        for m in models:
            m.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step(m)
            torch.cuda.synchronize(device)
            growth.append(torch.cuda.max_memory_allocated(device) - base)
            m.zero_grad(set_to_none=True)
    else:
        from torch.profiler import ProfilerActivity, profile, record_function
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for m, name in zip(models, names):
                m.zero_grad(set_to_none=True)
                gc.collect()
                with record_function(name):
                    step(m)
                m.zero_grad(set_to_none=True)
        growth = _cpu_allocation_growth(prof, names)
    return [_state_bytes(m) + g for m, g in zip(models, growth)]


@dataclass
class Row:
    """One measured comparison, plain (0) against conditioned (1): times in seconds (paired
    rounds), peak memory in bytes (baseline, measured)."""
    label: Tuple[str, ...]
    shape: Tuple[int, ...]
    train: Timing
    infer: Optional[Timing]
    peak: Tuple[int, int]

    @property
    def peak_ratio(self) -> float:
        return self.peak[1] / self.peak[0]


def bench_backbone(family: str, size: str, method: str, s: BenchmarkSettings) -> Row:
    """Conditioned backbone vs its plain twin: train, infer, peak memory."""
    device = torch.device(s.device)
    hw, batch = s.img_size[size], s.batch_size[size]
    plain, cond = build_twins(family, size, method, hw, s.tiny, s.device)
    x = torch.randn(batch, 3, *hw, device=device)
    models = (plain, cond)
    train = time_alternating(models, lambda m: train_step(m, x), s.warmup, s.repeats, device)
    infer = time_alternating(models, lambda m: infer_step(m, x), s.warmup, s.repeats, device)
    peak = peak_memory(models, lambda m: train_step(m, x), device)
    return Row((family, size, method), tuple(x.shape), train, infer, tuple(peak))


# --- attention layers alone ----------------------------------------------------------------

LAYER_CALLS = 10  # layer calls per timed sample: one call is too short to time alone


def _first_attention_input(model: nn.Module, x: torch.Tensor):
    """(layer, args, kwargs): the first attention layer of ``model`` and what it receives
    when ``model`` runs on ``x`` (window batches and mask for Swin)."""
    from .models.attention import attention_layers
    layer = attention_layers(model)[0][1]
    seen = {}

    class Captured(Exception):
        """Raised once the input is seen: nothing after this layer needs to run."""

    def grab(mod, args, kwargs):
        seen.update(args=tuple(a.detach() for a in args), kwargs=kwargs)
        raise Captured

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(x)
    except Captured:
        pass
    finally:
        handle.remove()
    return layer, seen['args'], seen['kwargs']


def bench_layer(family: str, size: str, method: str, s: BenchmarkSettings) -> Row:
    """The first attention layer of ``family``'s plain backbone against its conditioned copy,
    on the input that layer gets from an image batch of ``size``. Each timed sample is
    LAYER_CALLS calls. A conditioned backbone differs from the plain one only inside these
    layers (tokens aside), so the layer's time ratio bounds the backbone's from above."""
    from .models.attention import condition_attention_modules
    device = torch.device(s.device)
    hw, batch = s.img_size[size], s.batch_size[size]
    plain_backbone = build_plain(family, size, hw, s.tiny).to(device)
    plain, args, kwargs = _first_attention_input(
        plain_backbone, torch.randn(batch, 3, *hw, device=device))
    conditioning, fold = METHODS[method]
    cond = copy.deepcopy(plain)
    condition_attention_modules(cond, conditioning)
    if fold:
        fold_conditioning(cond)
    x = args[0].requires_grad_()  # a layer inside a network: the input's gradient is needed

    def train(m):
        for _ in range(LAYER_CALLS):
            train_step(m, (x, *args[1:]), kwargs)

    def infer(m):
        for _ in range(LAYER_CALLS):
            infer_step(m, (x, *args[1:]), kwargs)

    models = (plain, cond)
    train_t = time_alternating(models, train, s.warmup, s.repeats, device)
    infer_t = time_alternating(models, infer, s.warmup, s.repeats, device)
    peak = peak_memory(models, lambda m: train_step(m, (x, *args[1:]), kwargs), device)
    return Row((family, size, method), tuple(x.shape), train_t, infer_t, tuple(peak))


# --- whole detector -------------------------------------------------------------------------

def _replace_sync_bn(cfg):
    """SyncBN -> BN everywhere in a config (one process)."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
        for v in cfg.values():
            _replace_sync_bn(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _replace_sync_bn(v)
    return cfg


def build_detector(config: str, tiny: bool = False) -> nn.Module:
    """A Mask R-CNN from a repository config (or an ``mmdet::`` one), BN instead of SyncBN,
    no pretrained weights; ``tiny`` shrinks the backbone (tests)."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    if config.startswith('mmdet::'):  # Config.fromfile does not resolve mmdet:: directly
        cfg = Config.fromstring(f"_base_ = '{config}'\n", '.py')
    else:
        cfg = Config.fromfile(osp.join(REPO, config))
    model = _replace_sync_bn(cfg.model)  # a ConfigDict, as the runner builds it
    model.backbone.init_cfg = None
    if tiny:
        overrides, channels = TINY_DETECTOR_BACKBONES[model.backbone.type]
        model.backbone.update(overrides)
        model.neck.in_channels = channels
        t = TINY_DETECTOR_HEADS
        model.train_cfg.rpn.sampler.num = t['rpn_samples']
        model.train_cfg.rpn_proposal.max_per_img = t['proposals']
        model.train_cfg.rcnn.sampler.num = t['rcnn_samples']
        model.roi_head.bbox_head.fc_out_channels = t['fc_channels']
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(model)


def detection_batch(batch: int, hw: Tuple[int, int], num_classes: int = 80,
                    seed: int = 0) -> dict:
    """A synthetic Mask R-CNN batch: random uint8 images with 3 boxes and box masks each."""
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    rng = np.random.default_rng(seed)
    h, w = hw
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)))
        x0, y0 = rng.uniform(0, 0.6, (2, 3)) * [[w], [h]]
        x1, y1 = x0 + rng.uniform(0.2, 0.4, 3) * w, y0 + rng.uniform(0.2, 0.4, 3) * h
        boxes = np.stack([x0, y0, x1, y1], 1).round()
        masks = np.zeros((3, h, w), np.uint8)
        for m, (a, b, c, d) in zip(masks, boxes.astype(int)):
            m[b:d, a:c] = 1
        sample = DetDataSample(metainfo=dict(img_shape=hw, ori_shape=hw, scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32),
            labels=torch.from_numpy(rng.integers(0, num_classes, 3)),
            masks=BitmapMasks(masks, h, w))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def detector_step(model: nn.Module, data: dict) -> None:
    """One training iteration without the optimizer: preprocess, loss, backward."""
    model.train()
    model.zero_grad(set_to_none=True)
    batch = model.data_preprocessor(data, training=True)
    loss, _ = model.parse_losses(model(**batch, mode='loss'))
    loss.backward()


def bench_detectors(s: BenchmarkSettings) -> List[Row]:
    """The DETECTORS, timed together (alternating); ratios against the first (plain)."""
    device = torch.device(s.device)
    torch.manual_seed(0)
    models = [build_detector(cfg, s.tiny).to(device) for _, cfg in DETECTORS]
    models[1].load_state_dict(models[0].state_dict())  # the precond twin: same weights
    hw, batch = s.img_size['det'], s.batch_size['det']
    data = detection_batch(batch, hw)
    step = lambda m: detector_step(m, data)  # noqa: E731
    train = time_alternating(models, step, s.warmup, s.repeats, device)
    peak = peak_memory(models, step, device)
    return [Row((label, ), (batch, 3, *hw), train.pair(i), None, (peak[0], p))
            for i, ((label, _), p) in enumerate(zip(DETECTORS, peak))]


# --- token solvers ---------------------------------------------------------------------------

def _ill_conditioned_like(x: torch.Tensor, kappa: float, seed: int = 0) -> torch.Tensor:
    """Matrices shaped like ``x`` (B, N, D) with log-spaced singular values 1 .. 1/kappa."""
    g = torch.Generator().manual_seed(seed)
    *batch, n, d = x.shape
    k = min(n, d)
    u = torch.linalg.qr(torch.randn(*batch, n, k, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(*batch, d, k, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -torch.log10(torch.tensor(kappa)).item(), k, dtype=torch.float64)
    return ((u * s) @ v.mT).to(x.dtype).to(x.device)


def bench_solvers(family: str, size: str, s: BenchmarkSettings,
                  solvers: Sequence[str] = TOKEN_SOLVERS, kappa: float = 1e4) -> dict:
    """Each token solver on the real patch tokens X (B, N, D) of ``family``'s plain backbone:
    median ms, max κ(X + C) on X and on a matrix shaped like X with κ = ``kappa``."""
    device = torch.device(s.device)
    hw, batch = s.img_size[size], s.batch_size[size]
    plain = build_plain(family, size, hw, s.tiny).to(device).eval()
    with torch.no_grad():
        x = plain.patch_embed(torch.randn(batch, 3, *hw, device=device))[0]  # (B, N, D)
    hard = _ill_conditioned_like(x, kappa)
    out = dict(label=(family, size), shape=tuple(x.shape),
               kappa_x=condition_number(x).max().item(), solvers={})
    for solver in solvers:
        step = lambda _: token_correction(x, solver)  # noqa: E731
        ms = time_alternating([None], step, s.warmup, s.repeats, device).median(0) * 1e3
        out['solvers'][solver] = dict(
            ms=ms,
            kappa=condition_number(x + token_correction(x, solver)).max().item(),
            kappa_hard=condition_number(hard + token_correction(hard, solver)).max().item())
    return out


# --- running and reporting ------------------------------------------------------------------

def _log(msg: str) -> None:
    print(msg, flush=True)


def run_benchmark(s: BenchmarkSettings, log: Callable[[str], None] = _log) -> dict:
    """Every backbone row (families × sizes × methods), then the detector and solver tables."""
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no per-parameter init logs
    result = dict(settings=s, started=datetime.datetime.now(), load_start=os.getloadavg(),
                  backbones=[], layers=[], detectors=[], solvers=[])
    jobs = list(itertools.product(s.sizes, s.families, s.methods))
    for i, (size, family, method) in enumerate(jobs, 1):
        row = bench_backbone(family, size, method, s)
        result['backbones'].append(row)
        log(f'[{i}/{len(jobs)}] {family} {size} {method}: train x{row.train.ratio():.3f}, '
            f'infer x{row.infer.ratio():.3f}, peak x{row.peak_ratio:.3f}')
    if s.layers:
        from .conditioning import parse_conditioning
        layer_jobs = [(size, family, method) for size, family, method in jobs
                      if parse_conditioning(METHODS[method][0]).layer_methods]
        for size, family, method in layer_jobs:
            row = bench_layer(family, size, method, s)
            result['layers'].append(row)
            log(f'[layer] {family} {size} {method}: train x{row.train.ratio():.3f}, '
                f'infer x{row.infer.ratio():.3f}, peak x{row.peak_ratio:.3f}')
    if s.detectors and 'det' in s.sizes:
        result['detectors'] = bench_detectors(s)
        for row in result['detectors']:
            log(f'[detector] {row.label[0]}: train x{row.train.ratio():.3f}, '
                f'peak x{row.peak_ratio:.3f}')
    if s.solvers:
        for size, family in itertools.product(s.sizes, s.families):
            sol = bench_solvers(family, size, s)
            result['solvers'].append(sol)
            log(f'[solvers] {family} {size} {sol["shape"]}: ' + ', '.join(
                f'{k} {v["ms"]:.1f} ms' for k, v in sol['solvers'].items()))
    result['load_end'] = os.getloadavg()
    return result


def machine() -> str:
    """'CPU model (N cores)' or the GPU's name, for the table header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{cpu} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})'


def _ms(t: float) -> str:
    return f'{t * 1e3:.1f}'


def _mb(b: int) -> str:
    return f'{b / 2**20:.1f}'


def _timing_cells(t: Timing) -> List[str]:
    """plain ms, conditioned ms, ratio, ratio IQR."""
    q1, q3 = t.ratio_iqr()
    return [_ms(t.median(0)), _ms(t.median(1)), f'{t.ratio():.3f}', f'{q1:.3f}-{q3:.3f}']


def _shape(shape) -> str:
    return '×'.join(map(str, shape))


def render_markdown(result: dict, command: str) -> str:
    """The tables, with machine, torch, date, load averages and the command line."""
    s = result['settings']
    device = s.device
    if device.startswith('cuda'):
        device += f' ({torch.cuda.get_device_name(torch.device(device))})'
    load = lambda la: ' / '.join(f'{v:.2f}' for v in la)  # noqa: E731
    lines = [
        f'Generated {result["started"]:%Y-%m-%d %H:%M} by `{command}`',
        '',
        f'- machine: {machine()}; device: {device}',
        f'- torch {torch.__version__}, Python {platform.python_version()}',
        f'- load average (1/5/15 min) at start {load(result["load_start"])}, '
        f'at end {load(result["load_end"])}',
        f'- {s.repeats} alternating rounds after {s.warmup} warm-up calls each; times are '
        'medians; ratio = median over rounds of conditioned / plain twin (same weights, '
        'timed back to back), IQR = its quartiles over rounds',
        '',
    ]
    header = ('| family | size | method | input | train plain ms | train cond ms | train ratio '
              '| train ratio IQR | infer plain ms | infer cond ms | infer ratio '
              '| infer ratio IQR | peak plain MiB | peak cond MiB | peak ratio |')
    for key, title in (('backbones', 'Backbones:'),
                       ('layers', f'The first attention layer alone ({LAYER_CALLS} calls per '
                        'timed sample, on the input it gets in the backbone; `all` = precond '
                        '+ spectral, the layer methods). The backbone differs from its twin '
                        'only inside these layers (tokens aside), so a layer ratio bounds the '
                        'backbone ratio from above:')):
        if not result.get(key):
            continue
        lines += [title, '', header, '|' + '---|' * 15]
        for r in result[key]:
            lines.append('| ' + ' | '.join([
                *r.label, _shape(r.shape), *_timing_cells(r.train), *_timing_cells(r.infer),
                _mb(r.peak[0]), _mb(r.peak[1]), f'{r.peak_ratio:.3f}']) + ' |')
        lines.append('')
    if result['detectors']:
        lines += [
            'Mask R-CNN, one training iteration (preprocess, loss, backward), ratios against '
            'the plain XCiT-S12/16 detector:',
            '',
            '| detector | input | train ms | train ratio | train ratio IQR | peak MiB '
            '| peak ratio |',
            '|' + '---|' * 7,
        ]
        for r in result['detectors']:
            lines.append(f'| {r.label[0]} | {_shape(r.shape)} | '
                         + ' | '.join(_timing_cells(r.train)[1:]) + ' | '
                         f'{_mb(r.peak[1])} | {r.peak_ratio:.3f} |')
        lines.append('')
    if result['solvers']:
        names = list(result['solvers'][0]['solvers'])
        lines += [
            'Token solvers on the patch tokens X of each plain backbone (all images of the '
            'batch): median ms; max κ(X + C) on X and on a matrix of the same shape with '
            'κ = 1e4 (the method promises <= 2):',
            '',
            '| family | size | X | κ(X) | ' + ' | '.join(
                f'{n} ms | {n} κ(X+C) | {n} κ(X+C), κ(X)=1e4' for n in names) + ' |',
            '|' + '---|' * (4 + 3 * len(names)),
        ]
        for sol in result['solvers']:
            cells = [f'{v["ms"]:.1f} | {v["kappa"]:.3f} | {v["kappa_hard"]:.3f}'
                     for v in sol['solvers'].values()]
            lines.append(f'| {" | ".join(sol["label"])} | {_shape(sol["shape"])} | '
                         f'{sol["kappa_x"]:.3g} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    return '\n'.join(lines)


BEGIN, END = '<!-- benchmark:begin -->', '<!-- benchmark:end -->'


def write_markdown(path: str, text: str, tag: str = 'benchmark') -> None:
    """Write ``text`` to ``path``; if ``path`` exists with ``<!-- {tag}:begin -->`` /
    ``<!-- {tag}:end -->`` markers, replace only what lies between them (docs keep their
    prose, the tables are regenerated)."""
    begin, end = f'<!-- {tag}:begin -->', f'<!-- {tag}:end -->'
    old = open(path).read() if osp.exists(path) else ''
    if begin in old and end in old.split(begin, 1)[1]:
        head, rest = old.split(begin, 1)
        text = f'{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}'
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text if text.endswith('\n') else text + '\n')


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command as typed (script path relative to the repository when inside it)."""
    argv = list(sys.argv if argv is None else argv)
    script = osp.abspath(argv[0])
    if script.startswith(REPO + os.sep):
        argv[0] = osp.relpath(script, REPO)
    return 'python ' + shlex.join(argv)
