"""Speed and memory of conditioned models against their unconditioned twins (docs/performance.md).

Each backbone row builds a plain backbone and its conditioned twin with the same weights (the
plain state dict is loaded into the conditioned one), warms both up, then times them
alternately (:mod:`.timing`) and reports median times and the ratio conditioned / plain (the
median over rounds of the two back-to-back calls' ratio, with its interquartile range) of:

* ``train``: one training step of the backbone: forward, ``sum(out.sum())``, backward;
* ``infer``: one forward in eval mode under ``torch.no_grad()``;
* ``peak``: peak memory of the training step (:func:`.timing.peak_memory`).

With ``compile`` (:class:`BenchmarkSettings`) both twins of the backbone and layer rows are
wrapped with ``torch.compile`` after building and loading the weights; they compile during
the warm-up calls (at least one of train and of infer), which are not timed.

Whole-detector rows time one Mask R-CNN training iteration (data preprocessor, ``model.loss``,
backward) on a synthetic batch built with mmdet's ``DetDataSample`` / ``InstanceData``, for
the configs given in :class:`BenchmarkSettings`. The token-solver table times each solver of
method 3 on the real patch tokens of each backbone row and checks κ(X + C) <= 2.

With ``models='timm'`` the twins are timm's DeiT-S, Swin-T and XCiT-S12 (``timm.create_model``,
no weights downloaded), conditioned with :func:`mmcondattn.condition_model` and timed on their
``forward_features``: the same conditioning layers, with torch and timm alone (no mmcv, mmengine,
mmdet or mmpretrain), for a GPU stack the OpenMMLab ops are not built for. Layer and detector
rows need the OpenMMLab models.

This is a benchmark: it measures and reports, it asserts nothing about speed.
"""
import copy
import datetime
import itertools
import logging
import os
import platform
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..compat import replace_syncbn
from ..conditioning import condition_number, fold_conditioning, token_correction
from ..conditioning.options import TOKEN_SOLVERS
from .presets import PRESETS, check_choices, preset
from .report import machine
from .timing import Timing, peak_memory, time_alternating

__all__ = [
    'FAMILIES', 'METHODS', 'SIZES', 'MODEL_SOURCES', 'BenchmarkSettings', 'build_twins',
    'bench_backbone', 'bench_layer', 'bench_detectors', 'bench_solvers', 'run_benchmark',
    'render_markdown'
]

FAMILIES = ('vit', 'swin', 'xcit')
# the conditioned presets, each timed against its baseline twin
METHODS = tuple(name for name in PRESETS if name != 'baseline')
SIZES = ('cls', 'det')
# the token solvers timed ('auto' is one of them, chosen by device)
SOLVERS = tuple(name for name in TOKEN_SOLVERS if name != 'auto')
# family: (registered name, arch, tiny arch for tests)
BACKBONES = {
    'vit': ('ConditionedViT', 'deit-small',
            dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)),
    'swin':
    ('ConditionedSwin', 'tiny', dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))),
    'xcit': ('ConditionedXCiT', 's12', dict(embed_dims=64, depth=4, num_heads=4)),
}
# where the backbones come from: the registries of mmpretrain / mmdet, or timm alone
MODEL_SOURCES = ('openmmlab', 'timm')
# family: (timm model, tiny overrides); the timm twins of BACKBONES
TIMM_BACKBONES = {
    'vit': ('deit_small_patch16_224', dict(embed_dim=64, depth=2, num_heads=4)),
    'swin': ('swin_tiny_patch4_window7_224',
             dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))),
    'xcit': ('xcit_small_12_p16_224', dict(embed_dim=64, depth=4, num_heads=4)),
}
# tests: RoI sampling and the box head's width cut too (the stock heads dominate at 64 px)
TINY_DETECTOR_HEADS = dict(rpn_samples=32, proposals=64, rcnn_samples=16, fc_channels=64)
TINY_DETECTOR_BACKBONES = {  # backbone overrides, neck input channels
    'ConditionedXCiT': (dict(arch=BACKBONES['xcit'][2], out_indices=(0, 1, 2, 3)), [64] * 4),
    'SwinTransformer': (dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
                        [32, 64, 128, 256]),
}


@dataclass
class BenchmarkSettings:
    """What to run. ``img_size``: size -> (H, W); batch sizes: per size (defaults depend
    on the device and ``tiny``). ``detectors``: ``(label, config)`` of the whole-detector
    rows (a config file or an ``mmdet::`` one), timed against the first; twins of the first
    (the same state-dict keys) get its weights. ``tiny``: tiny archs and images (tests).
    ``compile``: backbone and layer rows time ``torch.compile``-d twins (``compile_backend``:
    inductor by default; a cheap one such as ``aot_eager`` for tests), compiled during an
    untimed warm-up (at least one call even with ``warmup=0``). ``models``: 'openmmlab' (the
    registered backbones) or 'timm' (timm's, torch and timm alone; no layer or detector rows,
    ``layers`` defaults to False there)."""
    families: Sequence[str] = FAMILIES
    methods: Sequence[str] = METHODS
    sizes: Sequence[str] = SIZES
    img_size: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    batch_size: Dict[str, int] = field(default_factory=dict)
    repeats: int = 7
    warmup: int = 2
    device: str = 'cpu'
    tiny: bool = False
    layers: Optional[bool] = None
    detectors: Sequence[Tuple[str, str]] = ()
    solvers: bool = True
    compile: bool = False
    compile_backend: str = 'inductor'
    models: str = 'openmmlab'

    def __post_init__(self):
        check_choices('models', [self.models], MODEL_SOURCES)
        timm = self.models == 'timm'
        if self.layers is None:
            self.layers = not timm
        if timm and (self.layers or self.detectors):
            raise ValueError('layer and Mask R-CNN rows need the OpenMMLab models: with '
                             "models='timm' pass --no-layers and --no-detector")
        self.families = check_choices('family', self.families, FAMILIES)
        self.methods = check_choices('method', self.methods, METHODS)
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

    @property
    def twin_warmup(self) -> int:
        """Untimed calls per twin before timing: compiled twins compile in the first one."""
        return max(self.warmup, 1) if self.compile else self.warmup

    def maybe_compile(self, *models: nn.Module) -> Tuple[nn.Module, ...]:
        """``models`` wrapped with ``torch.compile`` (``compile_backend``) if ``compile``."""
        if not self.compile:
            return models
        return tuple(torch.compile(m, backend=self.compile_backend) for m in models)


# --- building -------------------------------------------------------------------------------


def _build(size: str, cfg: dict) -> nn.Module:
    """Build from mmpretrain's MODELS (cls) or mmdet's (det), in that default scope."""
    from mmengine.registry import DefaultScope

    from .. import openmmlab  # noqa: F401  registers the conditioned backbones
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


class TimmFeatures(nn.Module):
    """A timm model as a backbone: ``forward`` is its ``forward_features`` (no head)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def build_timm(family: str, hw: Tuple[int, int], tiny: bool = False) -> TimmFeatures:
    """``family``'s timm model for (H, W) inputs, randomly initialised, no classifier."""
    import timm
    name, tiny_arch = TIMM_BACKBONES[family]
    return TimmFeatures(
        timm.create_model(
            name, pretrained=False, num_classes=0, img_size=hw, **(tiny_arch if tiny else {})))


def build_plain(family: str,
                size: str,
                hw: Tuple[int, int],
                tiny: bool = False,
                seed: int = 0,
                models: str = 'openmmlab') -> nn.Module:
    """The unconditioned backbone, initialised from ``seed`` (OpenMMLab: ``init_weights``;
    timm: its constructor; ``size`` only chooses the input size there)."""
    torch.manual_seed(seed)
    if models == 'timm':
        return build_timm(family, hw, tiny)
    plain = _build(size, backbone_cfg(family, size, hw, tiny))
    plain.init_weights()
    return plain


def build_twins(family: str,
                size: str,
                method: str,
                hw: Tuple[int, int],
                tiny: bool = False,
                device: str = 'cpu',
                seed: int = 0,
                models: str = 'openmmlab') -> Tuple[nn.Module, nn.Module]:
    """(plain, conditioned) backbones with the same weights, on ``device``.

    OpenMMLab: the plain one is initialised (``init_weights``) and its state dict loaded
    into the conditioned one; only the spectral ``*.correction`` buffers may be missing from
    it. timm: the conditioned one is a copy of the plain one, conditioned with
    :func:`mmcondattn.condition_model`. ``spectral_folded`` folds the corrections after that.
    """
    conditioning, fold = preset(method)
    plain = build_plain(family, size, hw, tiny, seed=seed, models=models)
    if models == 'timm':
        from ..conditioning import condition_model
        cond = condition_model(copy.deepcopy(plain), conditioning, report=False)
    else:
        cond = _build(size, dict(backbone_cfg(family, size, hw, tiny), conditioning=conditioning))
        missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
        if unexpected or any(not k.endswith('correction') for k in missing):
            raise RuntimeError(f'{family}/{method}: the twins differ in keys: missing '
                               f'{missing}, unexpected {unexpected}')
    if fold:
        fold_conditioning(cond)
    return plain.to(device), cond.to(device)


# --- measuring ------------------------------------------------------------------------------


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
    models = s.maybe_compile(
        *build_twins(family, size, method, hw, s.tiny, s.device, models=s.models))
    x = torch.randn(batch, 3, *hw, device=device)
    warmup = s.twin_warmup
    train = time_alternating(models, lambda m: train_step(m, x), warmup, s.repeats, device)
    infer = time_alternating(models, lambda m: infer_step(m, x), warmup, s.repeats, device)
    peak = peak_memory(models, lambda m: train_step(m, x), device)
    return Row((family, size, method), tuple(x.shape), train, infer, tuple(peak))


# --- attention layers alone ----------------------------------------------------------------

LAYER_CALLS = 10  # layer calls per timed sample: one call is too short to time alone


def _first_attention_input(model: nn.Module, x: torch.Tensor):
    """(layer, args, kwargs): the first attention layer of ``model`` and what it receives
    when ``model`` runs on ``x`` (window batches and mask for Swin)."""
    from ..models.attention import attention_layers
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
    from ..models.attention import condition_attention_modules
    device = torch.device(s.device)
    hw, batch = s.img_size[size], s.batch_size[size]
    plain_backbone = build_plain(family, size, hw, s.tiny).to(device)
    plain, args, kwargs = _first_attention_input(plain_backbone,
                                                 torch.randn(batch, 3, *hw, device=device))
    conditioning, fold = preset(method)
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

    models = s.maybe_compile(plain, cond)
    train_t = time_alternating(models, train, s.twin_warmup, s.repeats, device)
    infer_t = time_alternating(models, infer, s.twin_warmup, s.repeats, device)
    peak = peak_memory(models, lambda m: train_step(m, (x, *args[1:]), kwargs), device)
    return Row((family, size, method), tuple(x.shape), train_t, infer_t, tuple(peak))


# --- whole detector -------------------------------------------------------------------------


def build_detector(config: str, tiny: bool = False) -> nn.Module:
    """A Mask R-CNN from a config file (or an ``mmdet::`` one), BN instead of SyncBN, no
    pretrained weights; ``tiny`` shrinks the backbone (tests)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from .. import openmmlab  # noqa: F401  registers the conditioned backbones
    if config.startswith('mmdet::'):  # Config.fromfile does not resolve mmdet:: directly
        cfg = Config.fromstring(f"_base_ = '{config}'\n", '.py')
    else:
        cfg = Config.fromfile(config)
    model = cfg.model  # a ConfigDict, as the runner builds it
    replace_syncbn(model)
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


def detection_batch(batch: int, hw: Tuple[int, int], num_classes: int = 80, seed: int = 0) -> dict:
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
    """The detectors of ``s``, timed together (alternating); ratios against the first."""
    device = torch.device(s.device)
    torch.manual_seed(0)
    models = [build_detector(cfg, s.tiny).to(device) for _, cfg in s.detectors]
    first = models[0].state_dict()
    for m in models[1:]:
        if m.state_dict().keys() == first.keys():  # a twin of the first: the same weights
            m.load_state_dict(first)
    hw, batch = s.img_size['det'], s.batch_size['det']
    data = detection_batch(batch, hw)
    step = lambda m: detector_step(m, data)  # noqa: E731
    train = time_alternating(models, step, s.warmup, s.repeats, device)
    peak = peak_memory(models, step, device)
    return [
        Row((label, ), (batch, 3, *hw), train.pair(i), None, (peak[0], p))
        for i, ((label, _), p) in enumerate(zip(s.detectors, peak))
    ]


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


def patch_tokens(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tokens (B, N, D) of ``backbone``'s patch embedding on images ``x`` (B, 3, H, W).

    OpenMMLab's embeddings return ``(tokens, hw)``, timm's XCiT ``(tokens, (Hp, Wp))``, timm's
    ViT the tokens and timm's Swin channels-last maps (B, Hp, Wp, D)."""
    embed = backbone.model.patch_embed if isinstance(backbone, TimmFeatures) else \
        backbone.patch_embed
    out = embed(x)
    out = out[0] if isinstance(out, tuple) else out
    return out.flatten(1, 2) if out.dim() == 4 else out


def bench_solvers(family: str,
                  size: str,
                  s: BenchmarkSettings,
                  solvers: Sequence[str] = SOLVERS,
                  kappa: float = 1e4) -> dict:
    """Each token solver on the real patch tokens X (B, N, D) of ``family``'s plain backbone:
    median ms, max κ(X + C) on X and on a matrix shaped like X with κ = ``kappa``."""
    device = torch.device(s.device)
    hw, batch = s.img_size[size], s.batch_size[size]
    plain = build_plain(family, size, hw, s.tiny, models=s.models).to(device).eval()
    with torch.no_grad():
        x = patch_tokens(plain, torch.randn(batch, 3, *hw, device=device))
    hard = _ill_conditioned_like(x, kappa)
    out = dict(
        label=(family, size),
        shape=tuple(x.shape),
        kappa_x=condition_number(x).max().item(),
        solvers={})
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
    if s.models == 'openmmlab':
        from mmengine.logging import MMLogger
        MMLogger.get_current_instance().setLevel(logging.WARNING)  # no per-parameter init logs
    result = dict(
        settings=s,
        started=datetime.datetime.now(),
        load_start=os.getloadavg(),
        backbones=[],
        layers=[],
        detectors=[],
        solvers=[])
    jobs = list(itertools.product(s.sizes, s.families, s.methods))
    tag = ' (compiled)' if s.compile else ''
    for i, (size, family, method) in enumerate(jobs, 1):
        row = bench_backbone(family, size, method, s)
        result['backbones'].append(row)
        log(f'[{i}/{len(jobs)}] {family} {size} {method}{tag}: train x{row.train.ratio():.3f}, '
            f'infer x{row.infer.ratio():.3f}, peak x{row.peak_ratio:.3f}')
    if s.layers:
        from ..conditioning import parse_conditioning
        layer_jobs = [(size, family, method) for size, family, method in jobs
                      if parse_conditioning(PRESETS[method].conditioning).layer_methods]
        for size, family, method in layer_jobs:
            row = bench_layer(family, size, method, s)
            result['layers'].append(row)
            log(f'[layer] {family} {size} {method}{tag}: train x{row.train.ratio():.3f}, '
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
            log(f'[solvers] {family} {size} {sol["shape"]}: ' +
                ', '.join(f'{k} {v["ms"]:.1f} ms' for k, v in sol['solvers'].items()))
    result['load_end'] = os.getloadavg()
    return result


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


def backbone_names(models: str, tiny: bool) -> str:
    """'family: model arch, ...' of the backbones built from ``models``."""
    if models == 'timm':
        return ', '.join(f'{f}: timm `{n}`{" tiny" if tiny else ""}'
                         for f, (n, _) in TIMM_BACKBONES.items())
    return ', '.join(f'{f}: {n} {"tiny" if tiny else a}' for f, (n, a, _) in BACKBONES.items())


def models_line(models: str, tiny: bool) -> str:
    """What the backbone rows are made of, for the report."""
    if models == 'timm':
        import timm
        return (f'timm {timm.__version__} ({backbone_names(models, tiny)}; random weights, '
                '`forward_features` timed), conditioned with `mmcondattn.condition_model`')
    return f'the registered backbones ({backbone_names(models, tiny)})'


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
        f'- models: {models_line(s.models, s.tiny)}',
        f'- load average (1/5/15 min) at start {load(result["load_start"])}, '
        f'at end {load(result["load_end"])}',
        f'- {s.repeats} alternating rounds after {s.warmup} warm-up calls each; times are '
        'medians; ratio = median over rounds of conditioned / plain twin (same weights, '
        'timed back to back), IQR = its quartiles over rounds',
    ]
    compiled = ''
    if s.compile:
        compiled = f'compiled (`torch.compile`, backend {s.compile_backend})'
        lines.append(f'- {compiled}: both twins of every backbone and layer row, wrapped after '
                     f'building and loading the weights and compiled during their '
                     f'{s.twin_warmup} untimed warm-up call(s) of train and of infer; the '
                     'Mask R-CNN and token-solver rows run eagerly')
    lines.append('')
    header = ('| family | size | method | input | train plain ms | train cond ms | train ratio '
              '| train ratio IQR | infer plain ms | infer cond ms | infer ratio '
              '| infer ratio IQR | peak plain MiB | peak cond MiB | peak ratio |')
    for key, title in (('backbones', f'Backbones, {compiled}:' if compiled else 'Backbones:'),
                       ('layers', (f'{compiled.capitalize()}: t' if compiled else 'T') +
                        f'he first attention layer alone ({LAYER_CALLS} calls per '
                        'timed sample, on the input it gets in the backbone; `all` = precond '
                        '+ spectral, the layer methods). The backbone differs from its twin '
                        'only inside these layers (tokens aside), so a layer ratio bounds the '
                        'backbone ratio from above:')):
        if not result.get(key):
            continue
        lines += [title, '', header, '|' + '---|' * 15]
        for r in result[key]:
            lines.append('| ' + ' | '.join([
                *r.label,
                _shape(r.shape), *_timing_cells(r.train), *_timing_cells(r.infer),
                _mb(r.peak[0]),
                _mb(r.peak[1]), f'{r.peak_ratio:.3f}'
            ]) + ' |')
        lines.append('')
    if result['detectors']:
        lines += [
            'Mask R-CNN, one training iteration (preprocess, loss, backward), ratios against '
            f'the first row ({result["detectors"][0].label[0]}):',
            '',
            '| detector | input | train ms | train ratio | train ratio IQR | peak MiB '
            '| peak ratio |',
            '|' + '---|' * 7,
        ]
        for r in result['detectors']:
            lines.append(f'| {r.label[0]} | {_shape(r.shape)} | ' +
                         ' | '.join(_timing_cells(r.train)[1:]) + ' | '
                         f'{_mb(r.peak[1])} | {r.peak_ratio:.3f} |')
        lines.append('')
    if result['solvers']:
        names = list(result['solvers'][0]['solvers'])
        lines += [
            'Token solvers on the patch tokens X of each plain backbone (all images of the '
            'batch): median ms; max κ(X + C) on X and on a matrix of the same shape with '
            'κ = 1e4 (the method promises <= 2):',
            '',
            '| family | size | X | κ(X) | ' +
            ' | '.join(f'{n} ms | {n} κ(X+C) | {n} κ(X+C), κ(X)=1e4' for n in names) + ' |',
            '|' + '---|' * (4 + 3 * len(names)),
        ]
        for sol in result['solvers']:
            cells = [
                f'{v["ms"]:.1f} | {v["kappa"]:.3f} | {v["kappa_hard"]:.3f}'
                for v in sol['solvers'].values()
            ]
            lines.append(f'| {" | ".join(sol["label"])} | {_shape(sol["shape"])} | '
                         f'{sol["kappa_x"]:.3g} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    return '\n'.join(lines)
