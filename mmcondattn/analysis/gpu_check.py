"""The checks that need a GPU, in one command and one markdown report.

Parts, each with a time budget (the whole run stays under 8 minutes on one H200):

* ``environment``: torch / CUDA / GPU / mmcv, and one mmcv op (``RoIAlign``) run on the device;
* ``benchmark``: ``tools/analysis_tools/benchmark_conditioning.py`` at 224 px batch 8 and
  800×1333 batch 2 for ViT, Swin and XCiT (every method, the Mask R-CNN rows, the solvers);
* ``amp``: a few AdamW training steps of each family's detection backbone under
  ``torch.autocast`` for every method, fp16 (with ``torch.amp.GradScaler``) and bf16; the loss,
  the gradients and the updated weights must stay finite;
* ``sdpa``: the attention ops the torch profiler records in a ViT training step, stock layer
  against precond; precond must run the same fused SDPA kernel (flash / memory-efficient /
  cudnn) as stock and never the math fallback;
* ``dist_train``: a few iterations of ``tools/dist_train.sh`` with 1 process (nccl) of the
  headline config on a generated COCO-format dataset.

``dry_run=True`` runs the same code paths on CPU at tiny sizes (fp16 and the CUDA SDPA check are
reported as skipped, dist_train uses gloo); a test runs it.

``models='timm'`` checks the conditioning itself with torch and timm alone, for a GPU stack that
mmcv's CUDA ops are not built for (e.g. CUDA 13 / torch >= 2.9, which mmcv 2.1.0 has no wheels
for): timm's DeiT-S, Swin-T and XCiT-S12 conditioned with :func:`mmcondattn.condition_model`
in the benchmark (no layer or Mask R-CNN rows), AMP and SDPA parts, and instead of dist_train
a few DDP steps of the conditioned XCiT in one process (``ddp``: nccl on CUDA, gloo on CPU).
"""
import datetime
import json
import math
import os
import os.path as osp
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch

from ..errors import UserError
from .benchmark import BACKBONES  # family: (registry name, arch, tiny arch)
from .benchmark import MODEL_SOURCES, TIMM_BACKBONES, backbone_names, build_plain, build_twins
from .presets import PRESETS, check_choices, preset

__all__ = ['Check', 'run_gpu_check', 'report_dir', 'REPORT_NAME', 'HEADLINE']

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REPORT_NAME = 'gpu_check.md'
HEADLINE = 'configs/mask_rcnn_xcit_precond.py'
BENCHMARK = 'tools/analysis_tools/benchmark_conditioning.py'
# the trainable presets (a folded model is an inference form)
METHODS = tuple(name for name, p in PRESETS.items() if not p.fold)
# seconds per part on the GPU (sum 445 s + start-up: under 8 min); the dry run gets more
BUDGET = dict(environment=15, benchmark=220, amp=60, sdpa=30, dist_train=120)
DRY_BUDGET = dict(environment=60, benchmark=300, amp=300, sdpa=120, dist_train=300, ddp=120)
# timm mode: no dist_train; its time goes to the benchmark's solver table (sum 465 s)
TIMM_BUDGET = dict(environment=15, benchmark=300, amp=60, sdpa=30, ddp=60)
FUSED = ('flash', 'efficient', 'cudnn')  # names of the fused SDPA backends' ops and kernels
EPOCH_ITERS = re.compile(r'Epoch\(train\)\s*\[1\]\[\s*\d+/(\d+)\]')
ATTENTION_OP = re.compile(r'scaled_dot_product|flash|efficient_attention|cudnn_attention|fmha',
                          re.IGNORECASE)


@dataclass
class Check:
    """One line of the summary: ``status`` is PASS, FAIL or SKIP."""
    name: str
    status: str
    detail: str = ''


@dataclass
class Part:
    """A section of the report: its markdown body and its checks."""
    title: str
    body: List[str] = field(default_factory=list)
    checks: List[Check] = field(default_factory=list)

    def check(self, name: str, ok: Optional[bool], detail: str = '') -> bool:
        """Record a check; ``ok=None`` is a skip. Returns ``ok`` (False for a skip)."""
        self.checks.append(Check(name, 'SKIP' if ok is None else 'PASS' if ok else 'FAIL', detail))
        return bool(ok)


class Budget:
    """Seconds left for one part."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


# --- processes ------------------------------------------------------------------------------


def stream(cmd: List[str],
           timeout: float,
           log: Callable[[str], None],
           logfile: str,
           show: Callable[[str], bool],
           env: Optional[dict] = None,
           cwd: str = REPO):
    """Run ``cmd`` (its own process group), its output into ``logfile``, the lines that
    ``show`` selects to ``log``. Returns (exit code or None on timeout, output lines)."""
    full_env = dict(os.environ, **(env or {}))
    full_env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p)
    lines: List[str] = []
    with open(logfile, 'w') as f:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True)

        def read():
            for line in proc.stdout:
                f.write(line)
                lines.append(line.rstrip('\n'))
                if show(line):
                    log('    ' + line.strip()[:160])

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        reader.join(timeout=10)
    return rc, lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# --- environment ----------------------------------------------------------------------------


def check_environment(device: torch.device, budget: Budget, models: str = 'openmmlab') -> Part:
    """Versions, the GPU, and one mmcv op on ``device`` (timm mode: timm's version)."""
    part = Part('Environment')
    rows = [('Python', platform.python_version()), ('torch', torch.__version__),
            ('CUDA (torch build)', torch.version.cuda or 'none'),
            ('CUDA available', str(torch.cuda.is_available()))]
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        rows += [('GPU', f'{props.name}, {props.total_memory / 2**30:.0f} GiB, '
                  f'capability {props.major}.{props.minor}'),
                 ('cuDNN', str(torch.backends.cudnn.version()))]
    if models == 'timm':
        import timm
        rows.append(('timm', timm.__version__))
        part.body += ['| what | value |', '|---|---|'] + [f'| {k} | {v} |' for k, v in rows]
        part.check('mmcv ops', None, 'skipped: timm mode (torch and timm alone)')
        part.check('environment time budget', budget.left() >= 0, f'{budget.seconds:.0f} s')
        return part
    import mmcv
    import mmdet
    import mmengine
    import mmpretrain
    rows.append(('mmcv / mmengine / mmdet / mmpretrain',
                 f'{mmcv.__version__} / {mmengine.__version__} / {mmdet.__version__} / '
                 f'{mmpretrain.__version__}'))
    try:
        from mmcv.ops import RoIAlign, get_compiling_cuda_version
        rows.append(('mmcv ops compiled with CUDA', get_compiling_cuda_version()))
        feats = torch.rand(1, 4, 16, 16, device=device)
        rois = torch.tensor([[0., 1., 1., 9., 9.]], device=device)
        out = RoIAlign((2, 2), 1.0, 0)(feats, rois)
        ok, detail = bool(torch.isfinite(out).all()), f'RoIAlign ran on {device.type}'
    except Exception as e:  # noqa: BLE001  the report says what broke
        ok, detail = False, f'mmcv ops on {device.type}: {type(e).__name__}: {e}'.splitlines()[0]
    part.body += ['| what | value |', '|---|---|'] + [f'| {k} | {v} |' for k, v in rows]
    part.check('mmcv ops', ok, detail)
    if device.type != 'cuda':
        part.check('CUDA', None, 'skipped: no CUDA (dry run on CPU)')
    part.check('environment time budget', budget.left() >= 0, f'{budget.seconds:.0f} s')
    return part


# --- benchmark ------------------------------------------------------------------------------


def benchmark_args(dry_run: bool, models: str = 'openmmlab') -> List[str]:
    """The benchmark's options: the GPU sizes, or tiny CPU rows for the dry run. timm's
    detection size is 800×1344, the 800×1333 batch padded to 32 as mmdet's preprocessor does
    (timm's ViT and Swin take a fixed size)."""
    timm = ['--models', 'timm'] if models == 'timm' else []
    if dry_run:
        return [
            '--device', 'cpu', '--tiny', '--sizes', 'det', '--methods', 'precond', '--batch-size',
            '1', '--det-batch-size', '1', '--repeats', '1', '--warmup', '0', '--no-layers',
            '--no-solvers', '--no-detector', *timm
        ]
    return [
        '--device', 'cuda', '--sizes', 'cls', 'det', '--img-size', 'cls=224',
        'det=800x1344' if timm else 'det=800x1333', '--batch-size', '8', '--det-batch-size', '2',
        '--repeats', '7', '--warmup', '2', '--no-layers', *timm
    ]


def _ratio_cells(text: str) -> List[str]:
    """Every cell of a '... ratio' column in the markdown tables of ``text``."""
    cells, header = [], None
    for line in text.splitlines():
        if not line.startswith('|'):
            header = None
            continue
        row = [c.strip() for c in line.strip().strip('|').split('|')]
        if header is None:
            header = row
        elif not all(set(c) <= set('-') for c in row):
            cells += [c for h, c in zip(header, row) if h.endswith('ratio')]
    return cells


def run_benchmark_part(out: str,
                       dry_run: bool,
                       budget: Budget,
                       log,
                       models: str = 'openmmlab') -> Part:
    """The repository's benchmark command, its tables copied into the report."""
    part = Part('Benchmark')
    md, logfile = osp.join(out, 'benchmark.md'), osp.join(out, 'benchmark.log')
    cmd = [sys.executable, osp.join(REPO, BENCHMARK), *benchmark_args(dry_run, models), '--out', md]
    part.body.append(f'Command: `python {BENCHMARK} {" ".join(cmd[2:-2])}` '
                     f'(output: `benchmark.md`, log: `benchmark.log`)\n')
    rc, lines = stream(cmd, budget.left(), log, logfile, show=lambda s: s.startswith('['))
    text = open(md).read() if osp.exists(md) else ''
    progress = [s for s in lines if s.startswith('[')]
    part.body += [text.strip()] if text.strip() else [
        'No tables were written; the rows measured before it stopped:', '', '```', *progress, '```'
    ]
    cells = _ratio_cells(text)
    part.check('benchmark ran', rc == 0,
               'timed out' if rc is None else f'exit code {rc}, {budget.seconds:.0f} s budget')
    values = [float(c) for c in cells if re.fullmatch(r'[\d.]+', c)]
    part.check(
        'benchmark ratios finite',
        bool(cells) and len(values) == len(cells)
        and all(math.isfinite(v) and v > 0 for v in values), f'{len(values)} ratio cells')
    return part


# --- AMP ------------------------------------------------------------------------------------


def build_backbone(family: str,
                   method: str,
                   tiny: bool,
                   models: str = 'openmmlab',
                   hw: tuple = (512, 512)) -> torch.nn.Module:
    """``family``'s conditioned detection backbone (mmdet's registry) with ``method``; timm
    mode: timm's model for (H, W) = ``hw`` inputs, conditioned with ``condition_model``."""
    if models == 'timm':
        from ..conditioning import condition_model
        plain = build_plain(family, 'det', tuple(hw), tiny, models='timm')
        return condition_model(plain, preset(method).conditioning, report=False)
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    name, arch, tiny_arch = BACKBONES[family]
    cfg = dict(
        type=name, arch=tiny_arch if tiny else arch, conditioning=preset(method).conditioning)
    if family == 'xcit' and tiny:
        cfg['out_indices'] = (0, 1, 2, 3)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg)
    model.init_weights()
    return model


def amp_steps(model: torch.nn.Module,
              x: torch.Tensor,
              dtype: torch.dtype,
              steps: int,
              settle: int = 16) -> dict:
    """``steps`` AdamW steps under autocast; finiteness of loss, grads and weights, step ms.

    fp16 uses ``torch.amp.GradScaler`` (its default initial scale, as mmengine's
    ``AmpOptimWrapper``): a step whose scaled gradients overflow is skipped and the scale
    halved, which is normal at the start; while the last step overflowed, up to ``settle``
    more steps are taken. Gradients must be finite (after ``unscale_``) on the last step."""
    device = x.device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    losses, feats, times, overflow, grads_ok, n = [], [], [], 0, False, 0
    model.train()
    while n < steps or (scaler is not None and not grads_ok and n < steps + settle):
        n += 1
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            outs = model(x)
            outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
            energy = [o.float().pow(2).mean() for o in outs]
            # O(1) whatever the features' scale, as a detection head's loss is
            loss = sum(e / e.detach() for e in energy)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grads_ok = bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            overflow += scaler.get_scale() < scale
        else:
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
        feats.append(float(sum(energy).detach()))
    weights_ok = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    times = sorted(times[1:] or times)
    return dict(
        loss_ok=all(map(math.isfinite, losses)),
        grads_ok=grads_ok,
        weights_ok=weights_ok,
        ms=1e3 * times[len(times) // 2],
        overflow=overflow,
        energy=feats[-1],
        steps=n)


def cpu_fp16_autocast() -> bool:
    """Whether this torch runs fp16 autocast and ``GradScaler`` on CPU (2.13 does, 2.1 not)."""
    try:
        lin = torch.nn.Linear(4, 4)
        scaler = torch.amp.GradScaler('cpu')
        with torch.autocast('cpu', dtype=torch.float16):
            out = lin(torch.randn(2, 4))
        scaler.scale(out.float().sum()).backward()
        return out.dtype == torch.float16
    except (RuntimeError, TypeError, AttributeError):
        return False


def run_amp_part(device: torch.device,
                 dry_run: bool,
                 budget: Budget,
                 log,
                 models: str = 'openmmlab') -> Part:
    """Every family × method × (fp16, bf16): training steps under autocast."""
    part = Part('AMP training steps')
    tiny = dry_run
    shape = (1, 3, 64, 64) if tiny else (2, 3, 512, 512)
    steps = 2 if tiny else 4
    fp16 = device.type == 'cuda' or cpu_fp16_autocast()
    part.body += [
        f'{steps} AdamW steps (lr 1e-4) of each detection backbone (' +
        backbone_names(models, tiny) +
        f') on a random {"×".join(map(str, shape))} input on {device.type}; loss: Σ over the '
        'outputs of mean(out²) / its detached value (O(1) whatever the scale of the features, '
        'as a detection loss is). fp16 with `torch.amp.GradScaler` (default initial scale, as '
        "mmengine's AmpOptimWrapper; while its last step overflowed up to 16 more steps are "
        'taken; `overflow`: the steps it skipped), grads checked after `unscale_` on the last '
        'step; bf16 without a scaler. Step time: median after the first step; '
        '`Σ mean(out²)`: the energy of the features at the last step.\n',
        '| family | method | dtype | loss finite | grads finite | weights finite | steps '
        '| overflow | step ms | Σ mean(out²) |', '|---|---|---|---|---|---|---|---|---|---|'
    ]
    dtypes = [('fp16', torch.float16), ('bf16', torch.bfloat16)]
    failed, done, total = [], 0, len(BACKBONES) * len(METHODS) * len(dtypes)
    torch.manual_seed(0)
    x = torch.randn(*shape, device=device)
    yes = {True: 'yes', False: '**no**'}
    for family in BACKBONES:
        for method in METHODS:
            if budget.left() < 0:
                failed.append(f'{family}/{method}: not run (time budget)')
                continue
            model = build_backbone(family, method, tiny, models, shape[-2:]).to(device)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            for label, dtype in dtypes:
                done += 1
                if label == 'fp16' and not fp16:
                    part.body.append(f'| {family} | {method} | {label} | skipped: no CUDA | | '
                                     '| | | | |')
                    continue
                model.load_state_dict(state)
                try:
                    r = amp_steps(model, x, dtype, steps)
                except Exception as e:  # noqa: BLE001  a crash is a failed row
                    failed.append(
                        f'{family}/{method}/{label}: {type(e).__name__}: {e}'.splitlines()[0][:200])
                    part.body.append(f'| {family} | {method} | {label} | error | | | | | | |')
                    continue
                ok = r['loss_ok'] and r['grads_ok'] and r['weights_ok']
                if not ok:
                    failed.append(f'{family}/{method}/{label}')
                part.body.append(f'| {family} | {method} | {label} | {yes[r["loss_ok"]]} | '
                                 f'{yes[r["grads_ok"]]} | {yes[r["weights_ok"]]} | {r["steps"]} | '
                                 f'{r["overflow"] if label == "fp16" else "-"} | {r["ms"]:.1f} | '
                                 f'{r["energy"]:.4g} |')
                log(f'  [{done}/{total}] amp {family} {method} {label}: '
                    f'{"finite" if ok else "NOT FINITE"}, {r["ms"]:.1f} ms/step')
            del model
    part.check('AMP loss, grads and weights finite', not failed,
               '; '.join(failed) if failed else f'{done} rows')
    if not fp16:
        part.check('AMP fp16', None, 'skipped: no CUDA (and no fp16 autocast on CPU)')
    return part


# --- SDPA -----------------------------------------------------------------------------------


def attention_ops(model: torch.nn.Module, x: torch.Tensor, dtype: Optional[torch.dtype]):
    """Names of the attention ops and kernels the profiler records in one training step
    (forward and backward) of ``model`` on ``x``, under autocast to ``dtype`` if given."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU
                  ] + ([ProfilerActivity.CUDA] if x.device.type == 'cuda' else [])
    model.train()
    with profile(activities=activities) as prof:
        # no autocast object for fp32: torch 2.1 refuses a CPU autocast to float32 even disabled
        amp = nullcontext() if dtype is None else torch.autocast(x.device.type, dtype=dtype)
        with amp:
            outs = model(x)
            outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
            loss = sum(o.float().sum() for o in outs)
        loss.backward()
        _sync(x.device)
    return sorted({e.key for e in prof.key_averages() if ATTENTION_OP.search(e.key)})


def _cell(names: List[str]) -> str:
    """Op and kernel names for a table cell (kernel names shortened)."""
    return '<br>'.join(f'`{n[:90]}{"…" if len(n) > 90 else ""}`' for n in names) or 'none'


def _fused(names: List[str]) -> List[str]:
    return [n for n in names if any(f in n.lower() for f in FUSED)]


def run_sdpa_part(device: torch.device,
                  dry_run: bool,
                  budget: Budget,
                  log,
                  models: str = 'openmmlab') -> Part:
    """The attention ops of a ViT step, stock against precond (same weights)."""
    part = Part('Fused SDPA with precond')
    tiny = dry_run
    x = torch.randn(1 if tiny else 2, 3, 64 if tiny else 224, 64 if tiny else 224, device=device)
    if models == 'timm':
        stock, precond = build_twins(
            'vit', 'det', 'precond', tuple(x.shape[-2:]), tiny, models='timm')
        stock, precond = stock.to(device), precond.to(device)
        name = f'timm `{TIMM_BACKBONES["vit"][0]}`{" tiny" if tiny else ""}'
    else:
        stock = build_backbone('vit', 'baseline', tiny).to(device)
        precond = build_backbone('vit', 'precond', tiny)
        precond.load_state_dict(stock.state_dict())
        precond.to(device)
        name = f'ConditionedViT {"tiny" if tiny else "deit-small"} (detection form)'
    dtypes = [('fp32', None)] + ([('bf16', torch.bfloat16),
                                  ('fp16', torch.float16)] if device.type == 'cuda' else [])
    part.body += [
        f'Ops and kernels matching `{ATTENTION_OP.pattern}` in the torch profiler of '
        f'one training step (forward + backward) of {name} on '
        f'{"×".join(map(str, x.shape))}, {device.type}.\n',
        '| dtype | stock layer | precond | same fused ops |', '|---|---|---|---|'
    ]
    problems = []
    for label, dtype in dtypes:
        ops = {}
        for name, model in (('stock', stock), ('precond', precond)):
            attention_ops(model, x, dtype)  # warm-up: kernel selection, lazy init
            ops[name] = attention_ops(model, x, dtype)
        same = _fused(ops['stock']) == _fused(ops['precond']) and bool(_fused(ops['stock']))
        math_only = [n for n in ops['precond'] if 'math' in n and n not in ops['stock']]
        if not same or math_only:
            problems.append(f'{label}: stock {_fused(ops["stock"])}, precond '
                            f'{_fused(ops["precond"])}')
        part.body.append(f'| {label} | {_cell(ops["stock"])} | {_cell(ops["precond"])} | '
                         f'{"yes" if same and not math_only else "**no**"} |')
        log(f'  sdpa {label}: precond {"keeps" if same else "does NOT keep"} the fused kernel '
            f'({", ".join(_fused(ops["precond"])) or "none"})')
    if device.type == 'cuda':
        part.check('precond keeps the fused SDPA kernel', not problems, '; '.join(problems)
                   or ', '.join(label for label, _ in dtypes))
    else:
        part.body.append(f'\nCPU dry run: same fused ops as stock: '
                         f'{"yes" if not problems else "no (" + "; ".join(problems) + ")"}.')
        part.check('precond keeps the fused SDPA kernel', None, 'skipped: no CUDA')
    part.check('sdpa time budget', budget.left() >= 0, f'{budget.seconds:.0f} s')
    return part


# --- dist_train -----------------------------------------------------------------------------


def _tiny_pipelines(scale: int):
    train = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=(scale, scale), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ]
    test = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(scale, scale), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(
            type='PackDetInputs',
            meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
    ]
    return train, test


def headline_override(data_root: str, dry_run: bool) -> str:
    """A config that inherits the headline config and points it at the generated data: 3
    classes, random init, one epoch without validation or checkpoint. The GPU run keeps the
    headline's backbone, pipelines, batch and SyncBN; the dry run has a tiny XCiT and resizes
    to 64 px, batch 1."""
    classes = ('rectangle', 'circle', 'triangle')
    train = dict(
        data_root=data_root + '/',
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4))
    val = dict(
        data_root=data_root + '/',
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'))
    loader, backbone, neck = {}, dict(init_cfg=None), ''
    if dry_run:
        train['pipeline'], val['pipeline'] = _tiny_pipelines(64)
        loader = dict(batch_size=1, num_workers=0, persistent_workers=False)
        backbone.update(
            arch=dict(BACKBONES['xcit'][2], _delete_=True),  # replaces 's12'
            out_indices=(0, 1, 2, 3))
        neck = f'neck=dict(in_channels={[BACKBONES["xcit"][2]["embed_dims"]] * 4}), '
    lines = [
        '# The headline config on the generated shapes dataset (written by the GPU check).',
        f'_base_ = {osp.join(REPO, HEADLINE)!r}',
        f'model = dict(backbone=dict({_kwargs(backbone)}), {neck}# init_cfg=None: no download',
        '             roi_head=dict(bbox_head=dict(num_classes=3), '
        'mask_head=dict(num_classes=3)))',
        f'train_dataloader = dict(dataset=dict({_kwargs(train)}){_extra(loader)})',
        f'val_dataloader = dict(dataset=dict({_kwargs(val)}){_extra(loader)})',
        'test_dataloader = val_dataloader',
        f'val_evaluator = dict(ann_file={data_root + "/annotations/instances_val.json"!r})',
        'test_evaluator = val_evaluator',
        'train_cfg = dict(max_epochs=1, val_interval=2)  # no validation',
        'default_hooks = dict(logger=dict(interval=1), '
        'checkpoint=dict(interval=2, save_last=False))',
        'log_processor = dict(window_size=1)',
    ]
    return '\n'.join(lines) + '\n'


def _kwargs(d: dict) -> str:
    return ', '.join(f'{k}={v!r}' for k, v in d.items())


def _extra(d: dict) -> str:
    return ''.join(f', {k}={v!r}' for k, v in d.items())


def loss_records(work_dir: str) -> List[dict]:
    """The training records (with ``loss``) of the run in ``work_dir``."""
    records = []
    for root, _, files in os.walk(work_dir):
        if 'scalars.json' in files and osp.basename(root) == 'vis_data':
            with open(osp.join(root, 'scalars.json')) as f:
                records += [r for r in map(json.loads, filter(str.strip, f)) if 'loss' in r]
    return sorted(records, key=lambda r: r.get('iter', 0))


def run_dist_train_part(out: str, device: torch.device, dry_run: bool, budget: Budget, log) -> Part:
    """``tools/dist_train.sh`` with 1 process on the headline config, generated data."""
    from ..datasets import make_coco_shapes
    part = Part('dist_train')
    folder = osp.join(out, 'dist_train')
    os.makedirs(folder)
    num_train, img = (2, 64) if dry_run else (16, 256)
    data = osp.join(folder, 'data/shapes_coco')
    make_coco_shapes(data, num_train=num_train, num_val=2, img_size=img, seed=0)
    config = osp.join(folder, 'mask_rcnn_xcit_precond_shapes.py')
    with open(config, 'w') as f:
        f.write(headline_override(data, dry_run))
    work_dir = osp.join(folder, 'work_dir')
    expected = num_train // (1 if dry_run else 2)
    cmd = ['bash', osp.join(REPO, 'tools/dist_train.sh'), config, '1', '--work-dir', work_dir]
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    part.body.append(f'`tools/dist_train.sh dist_train/{osp.basename(config)} 1 --work-dir '
                     f'dist_train/work_dir` ({backend}); the config inherits `{HEADLINE}` and '
                     f'changes the data ({num_train} generated {img} px images, 3 classes'
                     f'{"; a tiny XCiT backbone" if dry_run else ""}), '
                     'the schedule (1 epoch, no validation, no checkpoint) and '
                     '`model.backbone.init_cfg=None`. Log: `dist_train/train.log`.\n')
    env = {'PORT': str(_free_port()), 'PYTHON': sys.executable}
    rc, lines = stream(
        cmd,
        budget.left(),
        log,
        osp.join(folder, 'train.log'),
        show=lambda s: 'Epoch(train)' in s or 'Error' in s,
        env=env)
    records = loss_records(work_dir)
    last = records[-1] if records else {}
    # the epoch's length as the runner counts it (a generated image without objects is
    # filtered out), else the planned one
    epoch = [int(m.group(1)) for m in map(EPOCH_ITERS.search, lines) if m]
    expected = epoch[-1] if epoch else expected
    loss = last.get('loss')
    text = '\n'.join(lines)
    part.body += [
        '| exit code | iterations done | last logged iteration | its loss | backend |',
        '|---|---|---|---|---|',
        f'| {"timed out" if rc is None else rc} | {len(records)} of {expected} | '
        f'{last.get("iter", "-")} | {f"{loss:.4f}" if _finite(loss) else loss} | '
        f'{backend} |'
    ]
    if rc != 0:
        tail = [s for s in lines if s.strip()][-15:]
        part.body += ['', 'Last lines of the log:', '', '```', *tail, '```']
    # the log's marks of a distributed run: mmengine's environment, and on CPU our gloo group
    marks = ['Distributed training: True'] + (['process group: gloo'] if backend == 'gloo' else [])
    missing = [m for m in marks if m not in text]
    part.check(
        'dist_train ran', rc == 0 and len(records) == expected and _finite(loss) and not missing,
        'timed out'
        if rc is None else f'exit code {rc}, {len(records)} of {expected} iterations, last loss '
        f'{f"{loss:.4f}" if _finite(loss) else loss}, '
        f'{backend}' + (f'; log lacks {missing}' if missing else ''))
    return part


# --- DDP (timm mode) ------------------------------------------------------------------------


def run_ddp_part(device: torch.device, dry_run: bool, budget: Budget, log) -> Part:
    """A few DDP training steps of the conditioned timm XCiT (all three methods) in one
    process: nccl on CUDA, gloo on CPU. The timm mode's stand-in for dist_train."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    part = Part('DDP training steps')
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    tiny, steps = dry_run, 3
    hw = (64, 64) if tiny else (512, 512)
    torch.manual_seed(0)
    model = build_backbone('xcit', 'all', tiny, 'timm', hw).to(device)
    x = torch.randn(2, 3, *hw, device=device)
    dist.init_process_group(
        backend, init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0, world_size=1)
    losses = []
    try:
        ddp = DistributedDataParallel(
            model, device_ids=[device.index or 0] if device.type == 'cuda' else None)
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
        ddp.train()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = ddp(x).float().pow(2).mean()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        _sync(device)
        grads_ok = all(
            bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
        weights_ok = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    finally:
        dist.destroy_process_group()
    ok = grads_ok and weights_ok and all(map(math.isfinite, losses))
    part.body += [
        f'{steps} AdamW steps of `DistributedDataParallel` (1 process, {backend}) around timm '
        f'`{TIMM_BACKBONES["xcit"][0]}`{" tiny" if tiny else ""} with precond + spectral + '
        f'tokens, on a random 2×3×{hw[0]}×{hw[1]} input; loss mean(features²).\n',
        '| backend | losses | grads finite | weights finite |', '|---|---|---|---|',
        f'| {backend} | {", ".join(f"{v:.4g}" for v in losses)} | {grads_ok} | {weights_ok} |'
    ]
    log(f'  ddp {backend}: losses {", ".join(f"{v:.4g}" for v in losses)}')
    part.check('DDP steps finite', ok, f'{backend}, {steps} steps')
    part.check('ddp time budget', budget.left() >= 0, f'{budget.seconds:.0f} s')
    return part


# --- the whole check ------------------------------------------------------------------------


def report_dir(out: Optional[str] = None) -> str:
    """The report folder: ``out`` (refused if it holds a report already) or a fresh
    ``work_dirs/gpu_check/<timestamp>``."""
    if out is not None:
        if osp.exists(osp.join(out, REPORT_NAME)):
            raise UserError(f'{osp.join(out, REPORT_NAME)} exists; a report is never '
                            'overwritten: pass another --out')
        if osp.isdir(out) and os.listdir(out):
            raise UserError(f'{out} is not empty: pass an empty or new --out folder')
        os.makedirs(out, exist_ok=True)
        return out
    stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
    base = osp.join('work_dirs', 'gpu_check', stamp)
    path, n = base, 0
    while osp.exists(path):
        n += 1
        path = f'{base}_{n}'
    os.makedirs(path)
    return path


def run_gpu_check(out: Optional[str] = None,
                  dry_run: bool = False,
                  log: Callable[[str], None] = print,
                  models: str = 'openmmlab') -> tuple:
    """Run every part, write ``<out>/gpu_check.md``; returns (report path, all passed).
    ``models``: 'openmmlab' (the registered backbones, the headline config) or 'timm' (torch
    and timm alone; a DDP part instead of dist_train)."""
    try:
        check_choices('models', [models], MODEL_SOURCES)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not dry_run and not torch.cuda.is_available():
        raise UserError('no CUDA device: the GPU check needs one (or pass --dry-run for the '
                        'CPU dry run)')
    out = report_dir(out)
    if models == 'openmmlab':
        import logging

        from mmengine.logging import MMLogger

        import mmcondattn.openmmlab  # noqa: F401  registers the backbones
        MMLogger.get_current_instance().setLevel(logging.WARNING)  # no per-parameter init logs
    device = torch.device('cpu' if dry_run else 'cuda')
    budgets = DRY_BUDGET if dry_run else TIMM_BUDGET if models == 'timm' else BUDGET
    started = time.monotonic()
    parts = []
    steps = [
        ('environment', lambda b: check_environment(device, b, models)),
        ('benchmark', lambda b: run_benchmark_part(out, dry_run, b, log, models)),
        ('amp', lambda b: run_amp_part(device, dry_run, b, log, models)),
        ('sdpa', lambda b: run_sdpa_part(device, dry_run, b, log, models)),
        ('ddp', lambda b: run_ddp_part(device, dry_run, b, log)) if models == 'timm' else
        ('dist_train', lambda b: run_dist_train_part(out, device, dry_run, b, log)),
    ]
    for i, (name, fn) in enumerate(steps, 1):
        log(f'[{i}/{len(steps)}] {name} (budget {budgets[name]} s)')
        t0 = time.monotonic()
        try:
            part = fn(Budget(budgets[name]))
        except Exception as e:  # noqa: BLE001  one part's crash is that part's FAIL
            part = Part(name)
            part.check(name, False, f'{type(e).__name__}: {e}'.splitlines()[0][:300])
        took = time.monotonic() - t0
        part.body.append(f'\n({took:.0f} s of a {budgets[name]} s budget)')
        parts.append(part)
        log(f'[{i}/{len(steps)}] {name}: '
            f'{"FAIL" if any(c.status == "FAIL" for c in part.checks) else "ok"} in {took:.0f} s')
    total = time.monotonic() - started
    checks = [c for p in parts for c in p.checks]
    passed = not any(c.status == 'FAIL' for c in checks)
    path = osp.join(out, REPORT_NAME)
    with open(path, 'x') as f:  # never overwrites
        f.write(render(parts, checks, passed, total, dry_run, models))
    log(f'{"PASS" if passed else "FAIL"}: wrote {path} ({total:.0f} s)')
    return path, passed


def render(parts: List[Part],
           checks: List[Check],
           passed: bool,
           total: float,
           dry_run: bool,
           models: str = 'openmmlab') -> str:
    """The report: one section per part, then the summary."""
    when = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
    mode = ': CPU dry run (tiny sizes)' if dry_run else ''
    timm = ' --models timm' if models == 'timm' else ''
    lines = [
        f'# GPU check{mode}{" (timm models: torch and timm alone)" if timm else ""}', '',
        f'Generated {when} by `tools/analysis_tools/gpu_check.sh'
        f'{" --dry-run" if dry_run else ""}{timm}`; {total:.0f} s in all.', ''
    ]
    for p in parts:
        lines += [f'## {p.title}', '', *p.body, '']
    lines += ['## Summary', '', '| check | result | detail |', '|---|---|---|']
    lines += [f'| {c.name} | {c.status} | {c.detail.replace("|", "/")} |' for c in checks]
    lines += [
        '', f'**{"PASS" if passed else "FAIL"}** ({sum(c.status == "PASS" for c in checks)}'
        f' passed, {sum(c.status == "FAIL" for c in checks)} failed, '
        f'{sum(c.status == "SKIP" for c in checks)} skipped)', ''
    ]
    return '\n'.join(lines)
