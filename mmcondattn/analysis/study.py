"""A small-scale study of what conditioning does: the logic of
``tools/analysis_tools/conditioning_study.py`` (:func:`run_study`).

For each task (``fmnist``: classification on the real Fashion-MNIST; ``cls`` / ``det``:
classification and Mask R-CNN on the generated shapes datasets), each tiny backbone of
``configs/study/``, each method (:data:`METHODS`: the trainable presets of
:mod:`.presets`) and each seed, it trains the config with the real mmengine runner and stock
mmdet / mmpretrain datasets, heads and metrics, validating every epoch. On ``fmnist``
spectral conditioning is first swept over ``lams`` (one run each, first seed); ``spectral``
and ``all`` then use each family's best λ of that sweep, ``tokens`` the default solver, and
ConditionMonitorHook logs κ of every attention layer over training. It writes under
``out_dir``:

* ``results.json``: every run's validation curve, final metric, wall time, the κ of its
  attention layers after training (per layer, measured by
  :func:`mmcondattn.models.probe.measure_conditioning` on a probe batch of the val set) and,
  on fmnist, κ per layer over training;
* ``study.md`` (shapes) / ``study_fmnist.md``: final metric per run and mean ± std over
  seeds, epochs each conditioned model needs to reach the baseline's final metric, κ means;
  on fmnist also the λ sweep, differences beyond two standard deviations, κ over training;
* ``curves_<task>_<family>.png``, ``kappa_<task>_<family>.png`` (κ per layer after
  training), and on fmnist ``kappa_train_fmnist_<family>.png`` (κ per layer over training)
  and ``sweep_fmnist.png``;
* with ``claims`` (fmnist): the papers' κ claims measured on the final checkpoints
  (:mod:`.condition_report`; ``claims_fmnist.md``, ``claim_<method>.png``).

Runs finished in an earlier call (their ``run.json`` exists) are reused, so an interrupted
study continues where it stopped; ``report_only`` reports the finished runs of the plan.
``docs`` copies the reports and plots into a page, between its ``<!-- study:begin/end -->``
(shapes), ``<!-- study-fmnist:... -->`` and ``<!-- claims-fmnist:... -->`` markers.
"""
import contextlib
import copy
import json
import math
import os
import os.path as osp
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from typing import List, Optional

from .. import openmmlab  # noqa: F401  the registries its models are built from
from ..engine.launch import UserError, load_config
from .logs import read_scalars
from .presets import PRESETS, preset
from .report import pyplot, save_figure, write_markdown

__all__ = ['TASKS', 'METHODS', 'StudySettings', 'run_study', 'conditioning_of', 'summarize']

# task: (metric key in the val logs, its label, {family: config})
TASKS = {
    # real data: Fashion-MNIST (mmpretrain's stock FashionMNIST; `make data-fmnist`)
    'fmnist': ('accuracy/top1', 'top-1 (%)', {
        'vit': 'configs/study/vit-tiny_fmnist.py',
        'swin': 'configs/study/swin-tiny_fmnist.py',
        'xcit': 'configs/study/xcit-tiny_fmnist.py',
    }),
    'cls': ('accuracy/top1', 'top-1 (%)', {
        'xcit': 'configs/study/xcit-tiny_shapes-cls.py',
        'vit': 'configs/study/vit-tiny_shapes-cls.py',
        'swin': 'configs/study/swin-tiny_shapes-cls.py',
    }),
    'det': ('coco/bbox_mAP_50', 'box AP50', {
        'xcit': 'configs/study/xcit-tiny_fpn_shapes-det.py',
    }),
}
SHAPES_TASKS = ['cls', 'det']  # the default: the generated-shapes study
# The trainable presets; any ``spectral_lam<λ>`` (e.g. spectral_lam0.5) is spectral
# conditioning with that λ, on every task. On the shapes tasks the token conditioning uses the
# exact svd solver: the flat shapes give token matrices with repeated rows (patches inside one
# shape), which only svd conditions (docs/methods.md).
METHODS = [name for name, p in PRESETS.items() if not p.fold]
DEFAULT_METHODS = ['baseline', 'precond', 'spectral', 'tokens', 'all']
# Tasks with a λ sweep ('fmnist'): ``spectral`` and ``all`` use the family's best λ of the
# sweep (see best_lam), ``tokens`` the default solver; each λ of ``--lams`` runs once, with the
# first seed, as the method ``spectral_lam<λ>``, and ``spectral`` is the run of its best λ.
SWEEP_TASKS = ('fmnist', )
DEFAULT_LAMS = [0.5, 1., 2., 5., 10.]
_LAM = re.compile(r'spectral_lam(\d+(?:\.\d+)?)')
# generated data: (format, folder, train images (per class for imagenet), val images, size,
# extra generator options); classification: large shapes (0.4-0.8 of the side) at 32 px
DATA = {
    'cls': ('imagenet', 'shapes_imagenet', 128, 32, 32, dict(size_range=(0.4, 0.8))),
    'det': ('coco', 'shapes_coco', 32, 16, 96, dict())
}
# κ(A), κ(C·O) (the head outputs the projection receives: preconditioned where precond is
# on, else O), κ(X) (layer inputs); see mmcondattn.models.probe.LAYER_KEYS
KAPPA_KEYS = ('kappa_attn', 'kappa_out_proj', 'kappa_x')
# also kept per layer after training (not in the shapes study's older records)
EXTRA_KEYS = ('kappa_out', 'kappa_wq', 'kappa_wk', 'kappa_wv', 'entropy_attn')
# ConditionMonitorHook's per-layer series kept in each run's record (κ over training)
TRAIN_KEYS = ('kappa_attn', 'kappa_out_proj', 'kappa_x', 'kappa_wq', 'kappa_wk', 'kappa_wv',
              'entropy_attn')


def sweep_name(lam):
    return f'spectral_lam{lam:g}'


def method_lam(method):
    """λ of a ``spectral_lam<λ>`` method name, else None."""
    m = _LAM.fullmatch(method)
    return float(m.group(1)) if m else None


def conditioning_of(task, method, lam=None):
    """The ``model.backbone.conditioning`` of ``method`` on ``task``: its preset, with
    ``lam`` (the family's best λ) for spectral on a sweep task, the svd token solver on the
    shapes tasks (the default solver on a sweep task)."""
    if method_lam(method) is not None:
        return dict(spectral=dict(lam=method_lam(method)))
    cond = preset(method).conditioning
    if task in SWEEP_TASKS and 'spectral' in cond:
        cond['spectral']['lam'] = lam
    elif task not in SWEEP_TASKS and 'tokens' in cond:
        cond['tokens']['solver'] = 'svd'
    return cond


@dataclass
class StudySettings:
    """What to run (the options of ``tools/analysis_tools/conditioning_study.py``).

    ``config_root``: the folder the study configs of :data:`TASKS` are relative to (the
    repository); ``command``: the command line the reports quote. Epochs per task, the
    Fashion-MNIST subset (``fmnist_train`` images of ``fmnist_root``), the λ of the sweep,
    ``scale_data`` (fraction of the generated images), ``report_only`` (train nothing),
    ``claims`` (fmnist: the papers' κ claims) and ``docs`` (a page to write the reports
    into) as the tool's options. Bad values raise a UserError.
    """
    out_dir: str = 'work_dirs/conditioning_study'
    tasks: List[str] = field(default_factory=lambda: list(SHAPES_TASKS))
    families: Optional[List[str]] = None
    methods: List[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    cls_epochs: int = 30
    det_epochs: int = 10
    fmnist_epochs: int = 5
    fmnist_train: int = 2000
    fmnist_root: str = 'data/fashion_mnist'
    lams: List[float] = field(default_factory=lambda: list(DEFAULT_LAMS))
    scale_data: float = 1.0
    report_only: bool = False
    claims: bool = False
    docs: Optional[str] = None
    config_root: str = '.'
    command: str = ''

    def __post_init__(self):
        for t in self.tasks:
            if t not in TASKS:
                raise UserError(f'unknown task {t!r}; valid: {", ".join(TASKS)}')
        for m in self.methods:
            if m not in METHODS and method_lam(m) is None:
                raise UserError(f'unknown method {m!r}; valid: {", ".join(METHODS)}, '
                                'spectral_lam<λ> (e.g. spectral_lam0.5)')
        if any(lam < 0 for lam in self.lams):
            raise UserError('--lams must be >= 0')
        known = [f for t in self.tasks for f in TASKS[t][2]]
        self.families = self.families or list(dict.fromkeys(known))
        for f in self.families:
            if f not in known:
                raise UserError(f'unknown family {f!r} for tasks {self.tasks}; valid: '
                                f'{sorted(set(known))}')
        if 'baseline' not in self.methods:
            raise UserError('--methods must include baseline (the conditioned runs are '
                            'compared with it)')


def make_data(task, out_dir, scale, fmnist_root='data/fashion_mnist'):
    """Generate the task's dataset under ``out_dir/data`` (kept if already there); for
    fmnist, check the IDX headers of the prepared Fashion-MNIST in ``fmnist_root``."""
    from ..datasets import make_coco_shapes, make_imagenet_folder
    if task == 'fmnist':  # IDX files of 28×28 images with as many labels (any count)
        from ..datasets.fashion_mnist import FILES, IdxError, read_idx_header
        try:
            dims = {name: read_idx_header(osp.join(fmnist_root, name))[1] for name in FILES}
        except IdxError as e:
            raise UserError(f'Fashion-MNIST is not ready in {fmnist_root} ({e}); run '
                            '`make data-fmnist`') from None
        for split in ('train', 't10k'):
            img, lab = dims[f'{split}-images-idx3-ubyte'], dims[f'{split}-labels-idx1-ubyte']
            if img[1:] != [28, 28] or lab != img[:1]:
                raise UserError(f'{fmnist_root}: {split} images {img}, labels {lab}: not '
                                'Fashion-MNIST; run `make data-fmnist`')
        return osp.abspath(fmnist_root)
    fmt, name, n_train, n_val, size, extra = DATA[task]
    n_train, n_val = max(2, round(n_train * scale)), max(2, round(n_val * scale))
    root = osp.join(out_dir, 'data', f'{name}_{n_train}_{n_val}_{size}')
    if not osp.isfile(osp.join(root, 'done')):
        shutil.rmtree(root, ignore_errors=True)
        make = make_coco_shapes if fmt == 'coco' else make_imagenet_folder
        make(root, n_train, n_val, size, seed=2026, **extra)
        open(osp.join(root, 'done'), 'w').close()
    return osp.abspath(root)


def run_config(task,
               family,
               method,
               seed,
               epochs,
               data_root,
               work_dir,
               conditioning=None,
               num_train=None,
               config_root='.'):
    """The config of one run: the family's study config (under ``config_root``) with this
    method (``conditioning``, default :func:`conditioning_of`), seed and data (fmnist: the
    first ``num_train`` train images, ConditionMonitorHook once per epoch)."""
    cfg = load_config(osp.join(config_root, TASKS[task][2][family]))
    cfg.model.backbone.conditioning = copy.deepcopy(
        conditioning_of(task, method) if conditioning is None else conditioning)
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'{task}_{family}_{method}_seed{seed}'
    cfg.log_level = 'WARNING'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        # FashionMNIST (like mmpretrain's MNIST configs) names its files' folder data_prefix
        key = 'data_prefix' if task == 'fmnist' else 'data_root'
        cfg[loader].dataset[key] = data_root + '/'
    if task == 'det':
        ann = osp.join(data_root, 'annotations/instances_val.json')
        cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = ann
        milestones = [round(epochs * 0.75), round(epochs * 0.92)]
        cfg.param_scheduler[-1].update(end=epochs, milestones=milestones)
    else:
        cfg.param_scheduler[-1].update(end=epochs)
    if task == 'fmnist':
        if num_train is not None:
            cfg.train_dataloader.dataset.indices = num_train
        n = cfg.train_dataloader.dataset.indices
        per_epoch = math.ceil(n / cfg.train_dataloader.batch_size)
        for hook in cfg.custom_hooks:  # κ before the first step and after every epoch
            if hook.type == 'ConditionMonitorHook':
                hook.interval = per_epoch
    cfg.train_cfg.update(max_epochs=epochs, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1000)
    return cfg


def val_curve(work_dir, key, epochs):
    """[(epoch, value)] of ``key`` in the run's val logs (mmengine's vis_data/scalars.json)
    for epochs 1..``epochs``. An epoch without the key scores 0: CocoMetric logs no AP when a
    detector makes no detection at all (early in training)."""
    curve = {e: 0. for e in range(1, epochs + 1)}
    curve.update(read_scalars(work_dir, lambda k: k == key).get(key, {}))
    return sorted(curve.items())


def kappa_over_training(work_dir):
    """What ConditionMonitorHook logged: ``{key: [[series per layer: [step, value], ...]]}``
    for TRAIN_KEYS, plus ``tokens``: ``[[step, κ(embedded tokens)], ...]``; None without
    hook records (the shapes tasks)."""
    logs = read_scalars(work_dir,
                        lambda k: k.startswith('cond_layers/') or k == 'cond/kappa_tokens')
    if not logs:
        return None
    out = {}
    for key in TRAIN_KEYS:
        layers = sorted(
            int(k.rsplit('/', 1)[1]) for k in logs if k.startswith(f'cond_layers/{key}/'))
        out[key] = [sorted(logs[f'cond_layers/{key}/{i}'].items()) for i in layers]
    out['tokens'] = sorted(logs.get('cond/kappa_tokens', {}).items())
    return out


def probe_kappa(runner):
    """κ of the trained model on one val batch (measure_conditioning): per attention layer
    (means over images and heads) and of the embedded patch tokens."""
    from ..models.probe import measure_conditioning
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    batch = model.data_preprocessor(next(iter(runner.val_dataloader)), False)
    result = measure_conditioning(model.backbone, batch['inputs'])
    return dict(
        layers=[{
            k: row[k]
            for k in KAPPA_KEYS + EXTRA_KEYS
        } for row in result['layers']],
        tokens=(result['tokens'] or {}).get('kappa'))


def _work_dir(out_dir, task, family, method, seed):
    return osp.join(out_dir, 'runs', task, family, method, f'seed{seed}')


def finished_run(task, family, method, seed, epochs, out_dir, conditioning=None, num_train=None):
    """The record of a finished run with these settings, or None."""
    done = osp.join(_work_dir(out_dir, task, family, method, seed), 'run.json')
    if osp.isfile(done):
        with open(done) as f:
            rec = json.load(f)
        cond = conditioning_of(task, method) if conditioning is None else conditioning
        if (rec.get('epochs'), rec.get('conditioning'), rec.get('num_train')) == (epochs, cond,
                                                                                  num_train):
            return rec
    return None


def train_one(task,
              family,
              method,
              seed,
              epochs,
              data_root,
              out_dir,
              conditioning=None,
              num_train=None,
              config_root='.'):
    """Train (or reuse) one run; returns its record."""
    rec = finished_run(task, family, method, seed, epochs, out_dir, conditioning, num_train)
    if rec is not None:
        return rec
    cond = conditioning_of(task, method) if conditioning is None else conditioning
    work_dir = _work_dir(out_dir, task, family, method, seed)
    done = osp.join(work_dir, 'run.json')
    shutil.rmtree(work_dir, ignore_errors=True)  # a stale or interrupted run
    from mmengine.runner import Runner
    start = time.perf_counter()
    runner = Runner.from_cfg(
        run_config(task, family, method, seed, epochs, data_root, work_dir, cond, num_train,
                   config_root))
    # pycocotools prints its tables on stdout: into the run's folder, not the console
    with open(osp.join(work_dir, 'stdout.txt'), 'w') as out, contextlib.redirect_stdout(out):
        runner.train()
    rec = dict(
        task=task,
        family=family,
        method=method,
        seed=seed,
        epochs=epochs,
        conditioning=cond,
        num_train=num_train,
        seconds=round(time.perf_counter() - start, 1),
        curve=val_curve(work_dir, TASKS[task][0], epochs),
        kappa=probe_kappa(runner),
        iters_per_epoch=len(runner.train_dataloader),
        kappa_train=kappa_over_training(work_dir),
        checkpoint=osp.relpath(osp.join(work_dir, f'epoch_{epochs}.pth'), out_dir),
        config=osp.relpath(osp.join(work_dir, osp.basename(TASKS[task][2][family])), out_dir))
    for h in list(runner.logger.handlers):  # free the run's log file
        h.close()
        runner.logger.removeHandler(h)
    with open(done, 'w') as f:
        json.dump(rec, f)
    return rec


def best_lam(task, family, lams, seed, epochs, out_dir, num_train):
    """The family's best λ of the sweep: the highest final metric of the finished
    ``spectral_lam<λ>`` runs with ``seed`` (ties: the smaller λ); None if none finished."""
    scores = []
    for lam in lams:
        rec = finished_run(task, family, sweep_name(lam), seed, epochs, out_dir,
                           conditioning_of(task, sweep_name(lam)), num_train)
        if rec is not None:
            scores.append((-rec['curve'][-1][1], lam))
    return min(scores)[1] if scores else None


def make_plan(settings):
    """``[(task, family, method, seed)]`` in training order: seed-major over the families (a
    study cut short still has every method and family of the first seeds); on a sweep task
    each family's λ sweep comes first (first seed), and ``spectral`` / ``all`` stand for the
    family's best λ."""
    plan = []
    for t in settings.tasks:
        families = [f for f in settings.families if f in TASKS[t][2]]
        for s in settings.seeds:
            for f in families:
                if t in SWEEP_TASKS and 'spectral' in settings.methods and s == settings.seeds[0]:
                    plan += [(t, f, sweep_name(lam), s) for lam in settings.lams]
                plan += [(t, f, m, s) for m in settings.methods]
    return plan


def resolve(task, family, method, settings):
    """``(run name, conditioning, num_train)`` of a plan entry; run name None when it needs
    the family's best λ and no sweep run has finished."""
    if task not in SWEEP_TASKS:
        return method, conditioning_of(task, method), None
    lam = None
    if method in ('spectral', 'all'):
        lam = best_lam(task, family, settings.lams, settings.seeds[0], settings.fmnist_epochs,
                       settings.out_dir, settings.fmnist_train)
        if lam is None:
            return None, None, settings.fmnist_train
    name = sweep_name(lam) if method == 'spectral' else method
    return name, conditioning_of(task, method, lam), settings.fmnist_train


def task_epochs(task, settings):
    return {
        'cls': settings.cls_epochs,
        'det': settings.det_epochs,
        'fmnist': settings.fmnist_epochs
    }[task]


# --- report -------------------------------------------------------------------------------
def _mean_std(xs):
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.)


def _mean_curve(runs):
    """Epochs and the mean / std over seeds of the val metric at each epoch."""
    epochs = [e for e, _ in runs[0]['curve']]
    vals = [[dict(r['curve'])[e] for r in runs] for e in epochs]
    return epochs, [_mean_std(v)[0] for v in vals], [_mean_std(v)[1] for v in vals]


def _order(method, methods):
    """Sort key: the order of ``methods``, then the sweep runs by λ."""
    if method in methods:
        return (methods.index(method), 0.)
    return (len(methods), method_lam(method) if method_lam(method) is not None else math.inf)


def _reach(curve, target):
    """First epoch at which ``curve`` ([(epoch, value)]) reaches ``target``, else None."""
    return next((e for e, v in curve if v >= target), None)


def summarize(records, methods):
    """Rows of the report: one per (task, family, method)."""
    groups = {}
    for r in records:
        groups.setdefault((r['task'], r['family'], r['method']), []).append(r)
    rows = []
    for (task, family, method), runs in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _order(kv[0][2], methods))):
        runs = sorted(runs, key=lambda r: r['seed'])
        epochs, mean, _ = _mean_curve(runs)
        base = groups.get((task, family, 'baseline'))
        base_final = _mean_curve(base)[1][-1] if base else None
        reach = next((e for e, v in zip(epochs, mean) if v >= base_final), None) \
            if base_final is not None else None
        finals = [r['curve'][-1][1] for r in runs]
        kappa = {
            k: statistics.fmean(
                statistics.fmean(lay[k] for lay in r['kappa']['layers']) for r in runs)
            for k in KAPPA_KEYS
        }
        if all(r['kappa']['tokens'] is not None for r in runs):
            kappa['kappa_tokens'] = statistics.fmean(r['kappa']['tokens'] for r in runs)
        rows.append(
            dict(
                task=task,
                family=family,
                method=method,
                seeds=len(runs),
                final=_mean_std(finals),
                reach=reach,
                epochs=epochs[-1],
                minutes=sum(r['seconds'] for r in runs) / 60,
                kappa=kappa,
                seed_list=[r['seed'] for r in runs],
                finals=finals,
                reach_runs=[_reach(r['curve'], base_final)
                            for r in runs] if base_final is not None else [None] * len(runs),
                base_final=base_final))
    return rows


def plot(records, methods, out_dir):
    """Validation curves and κ per layer, one PNG each per (task, family); returns paths."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    paths = []
    pairs = sorted({(r['task'], r['family']) for r in records})
    for task, family in pairs:
        runs = {
            m: [r for r in records if (r['task'], r['family'], r['method']) == (task, family, m)]
            for m in methods
        }
        runs = {m: rs for m, rs in runs.items() if rs}
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, rs in runs.items():
            e, mean, std = _mean_curve(rs)
            ax.plot(e, mean, label=m, lw=2 if m == 'baseline' else 1.2)
            ax.fill_between(
                e, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                alpha=0.15)
        ax.set(
            xlabel='epoch',
            ylabel=TASKS[task][1],
            title=f'{task} / {family}: validation, mean ± std over seeds')
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, osp.join(out_dir, f'curves_{task}_{family}.png')))

        fig, axes = plt.subplots(1, len(KAPPA_KEYS), figsize=(4 * len(KAPPA_KEYS), 3.6))
        for ax, k in zip(axes, KAPPA_KEYS):
            for m, rs in runs.items():
                layers = [
                    statistics.fmean(r['kappa']['layers'][i][k] for r in rs)
                    for i in range(len(rs[0]['kappa']['layers']))
                ]
                ax.plot(range(len(layers)), layers, marker='o', label=m)
            ax.set(yscale='log', xlabel='attention layer', title=f'{k} after training')
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].legend(fontsize=8)
        fig.suptitle(f'{task} / {family}', fontsize=10)
        paths.append(save_figure(fig, osp.join(out_dir, f'kappa_{task}_{family}.png')))
    return paths


def report(rows, settings, seconds, plots):
    """The markdown report."""
    lines = [
        '| task | family | method | seeds | final (mean ± std) | epochs to reach baseline '
        'final | κ(A) | κ(C·O) | κ(X) | κ(tokens) | train min |',
        '|---|---|---|---|---|---|---|---|---|---|---|'
    ]
    for r in rows:
        reach = (f"{r['reach']} / {r['epochs']}"
                 if r['reach'] is not None else f"not reached in {r['epochs']}")
        kap = [
            f"{r['kappa'][k]:.3g}" if k in r['kappa'] else '-'
            for k in KAPPA_KEYS + ('kappa_tokens', )
        ]
        lines.append(f"| {r['task']} | {r['family']} | {r['method']} | {r['seeds']} | "
                     f"{r['final'][0]:.3f} ± {r['final'][1]:.3f} | {reach} | "
                     f"{' | '.join(kap)} | {r['minutes']:.1f} |")
    head = [
        f'Command: `{settings.command}`  ',
        f'Wall time of this call: {seconds / 60:.1f} min; training time of the runs '
        f"reported (column 'train min'): {sum(r['minutes'] for r in rows):.0f} min; "
        f'machine: {os.cpu_count()} CPU cores, load average at the end '
        f'{os.getloadavg()[0]:.1f}.  ',
        'Metrics: classification top-1 (%) on the generated val split; detection '
        'COCO box AP50 (CocoMetric, 0-1). κ after training, on one val batch '
        '(`mmcondattn.models.probe.measure_conditioning`): κ(A) attention matrices, κ(C·O) '
        'head outputs as the projection receives them (preconditioned where precond is '
        'on), κ(X) layer inputs (means over layers, heads, images); κ(tokens) '
        'the embedded patch tokens the first layer receives.', ''
    ]
    figs = [f'![{osp.basename(p)}]({osp.basename(p)})' for p in plots]
    return '\n'.join(head + lines + [''] + figs) + '\n'


# --- report of a sweep task (fmnist: real data) --------------------------------------------
def _gmean(xs):
    """Geometric mean (κ spans decades)."""
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else float('nan')


def _label(method):
    lam = method_lam(method)
    return f'spectral λ={lam:g}' if lam is not None else method


def real_groups(records, task, family, methods, lam):
    """``{label: [records]}`` of the main methods of one family: ``spectral`` is the runs of
    the best λ ``lam`` (the sweep's run of the first seed among them)."""
    out = {}
    for m in methods:
        name = sweep_name(lam) if m == 'spectral' and lam is not None else m
        rs = sorted(
            (r for r in records if (r['task'], r['family'], r['method']) == (task, family, name)),
            key=lambda r: r['seed'])
        if rs:
            out[f'spectral (λ*={lam:g})' if m == 'spectral' else m] = rs
    return out


def _layer_curves(runs, key):
    """Per layer: epochs and the geometric mean over runs of ConditionMonitorHook's
    ``key``; [] when the runs have no hook records."""
    if any(not r.get('kappa_train') or not r['kappa_train'].get(key) for r in runs):
        return []
    out = []
    for i in range(len(runs[0]['kappa_train'][key])):
        series = [dict(map(tuple, r['kappa_train'][key][i])) for r in runs]
        steps = sorted(set.intersection(*(set(sr) for sr in series)))
        per = runs[0]['iters_per_epoch']
        agg = (lambda v: statistics.fmean(v)) if key.startswith('entropy') else _gmean
        out.append(([st / per for st in steps], [agg([sr[st] for sr in series]) for st in steps]))
    return out


def plot_real(records, task, methods, sweep_seed, best, out_dir):
    """curves_<task>_<family>.png, kappa_train_<task>_<family>.png (κ per layer over
    training, ConditionMonitorHook), kappa_<task>_<family>.png (κ per layer after training)
    and sweep_<task>.png; returns the paths."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    paths = []
    families = [f for f in TASKS[task][2] if any(r['family'] == f for r in records)]
    for family in families:
        groups = real_groups(records, task, family, methods, best.get(family))
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for lab, rs in groups.items():
            e, mean, std = _mean_curve(rs)
            ax.plot(e, mean, label=f'{lab} ({len(rs)} seeds)', lw=2 if lab == 'baseline' else 1.2)
            ax.fill_between(
                e, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                alpha=0.15)
        ax.set(
            xlabel='epoch',
            ylabel=f'test {TASKS[task][1]}',
            title=f'Fashion-MNIST / {family}: test top-1, mean ± std over seeds')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, osp.join(out_dir, f'curves_{task}_{family}.png')))

        keys = [('kappa_attn', 'κ(A)'), ('kappa_out_proj', 'κ(C·O)'), ('kappa_x', 'κ(X)'),
                ('kappa_wq', 'κ(W_Q)'), ('entropy_attn', 'attention entropy')]
        depth = max((len(_layer_curves(rs, 'kappa_attn')) for rs in groups.values()), default=0)
        if depth:
            fig, axes = plt.subplots(
                len(keys), depth, figsize=(3.2 * depth, 2.5 * len(keys)), squeeze=False)
            for row, (key, title) in enumerate(keys):
                for lab, rs in groups.items():
                    for i, (x, y) in enumerate(_layer_curves(rs, key)):
                        axes[row][i].plot(x, y, marker='.', ms=4, label=lab)
                for i in range(depth):
                    ax = axes[row][i]
                    if key.startswith('kappa'):
                        ax.set_yscale('log')
                    ax.set_title(f'{title}, layer {i}', fontsize=9)
                    ax.grid(alpha=0.3)
                    if row == len(keys) - 1:
                        ax.set_xlabel('epoch')
            axes[0][0].legend(fontsize=7)
            fig.suptitle(
                f'Fashion-MNIST / {family}: conditioning over training per attention '
                'layer (ConditionMonitorHook, 4 train images; geometric mean over '
                'seeds)',
                fontsize=10)
            paths.append(
                save_figure(fig, osp.join(out_dir, f'kappa_train_{task}_{family}.png'), dpi=80))

        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
        for ax, k in zip(axes, KAPPA_KEYS + ('entropy_attn', )):
            for lab, rs in groups.items():
                if any(k not in lay for r in rs for lay in r['kappa']['layers']):
                    continue
                agg = statistics.fmean if k.startswith('entropy') else _gmean
                n = len(rs[0]['kappa']['layers'])
                ax.plot(
                    range(n), [agg([r['kappa']['layers'][i][k] for r in rs]) for i in range(n)],
                    marker='o',
                    label=lab)
            if k.startswith('kappa'):
                ax.set_yscale('log')
            ax.set(xlabel='attention layer', title=f'{k} after training')
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].legend(fontsize=7)
        fig.suptitle(f'Fashion-MNIST / {family}: after training, test images', fontsize=10)
        paths.append(save_figure(fig, osp.join(out_dir, f'kappa_{task}_{family}.png')))

    sweeps = {
        f:
        sorted(
            ((method_lam(r['method']), r) for r in records
             if r['family'] == f and method_lam(r['method']) is not None and r['seed'] == sweep_seed
             ),
            key=lambda t: t[0])
        for f in families
    }
    if any(sweeps.values()):
        fig, axes = plt.subplots(
            2, len(families), figsize=(4.5 * len(families), 6.5), squeeze=False)
        for j, f in enumerate(families):
            pts = sweeps[f]
            if not pts:
                continue
            xs = [lam for lam, _ in pts]
            base = [r for r in records if (r['family'], r['method']) == (f, 'baseline')]
            ax = axes[0][j]
            ax.plot(xs, [r['curve'][-1][1] for _, r in pts], marker='o', label='spectral')
            if base:
                m, sd = _mean_std([r['curve'][-1][1] for r in base])
                ax.axhspan(m - sd, m + sd, color='gray', alpha=0.2)
                ax.axhline(m, color='gray', ls='--', label=f'baseline ({len(base)} seeds)')
            if best.get(f) is not None:
                ax.axvline(best[f], color='C3', ls=':', label=f'λ* = {best[f]:g}')
            ax.set(xscale='log', xlabel='λ', ylabel='final test top-1 (%)', title=f)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
            ax = axes[1][j]
            ax.plot(
                xs, [
                    statistics.fmean(lay['entropy_attn'] for lay in r['kappa']['layers'])
                    for _, r in pts
                ],
                marker='o',
                color='C2')
            ax.set(xscale='log', xlabel='λ', ylabel='attention entropy after training (nats)')
            ax.grid(alpha=0.3)
        fig.suptitle('Spectral conditioning: λ sweep (one seed each)', fontsize=10)
        paths.append(save_figure(fig, osp.join(out_dir, f'sweep_{task}.png')))
    return paths


def _fmt_reach(reach, epochs):
    return ', '.join(str(x) if x is not None else '–' for x in reach)


def report_real(records, task, settings, seconds, plots, best):
    """The markdown report of a sweep task: main table (3 seeds at each method's setting),
    λ sweep, κ over training, plots."""
    rows = summarize(records, settings.methods)
    by = {(r['family'], r['method']): r for r in rows}
    families = [f for f in TASKS[task][2] if any(r['family'] == f for r in rows)]
    minutes = sum(r['seconds'] for r in records) / 60
    lines = [
        f'Command: `{settings.command}`  ',
        f'Wall time of this call: {seconds / 60:.1f} min; training time of the {len(records)} '
        f'runs reported: {minutes:.0f} min (one thread each; per run it includes the '
        f'per-epoch test evaluation and the κ probe); machine: {os.cpu_count()} CPU cores, '
        f'load average at the end {os.getloadavg()[0]:.1f}.  ',
        f'Data: the first {settings.fmnist_train} Fashion-MNIST train images, '
        f'{settings.fmnist_epochs} epochs; top-1 (%) on the full 10,000-image test split '
        'after every epoch. Runs under '
        f'`{settings.out_dir}/runs/{task}/<family>/<method>/seed<k>/` (run.json, logs, the final '
        'checkpoint).', '',
        '**Main table** (each method at its chosen setting, seeds as listed). Δ: mean minus '
        "the baseline's mean; σ_Δ = √(σ² + σ_baseline²), the spread of the difference of two "
        'single runs; **bold** when |Δ| > 2σ_Δ. Epochs to reach: the first epoch at which '
        "each run's test top-1 reaches the baseline's mean final top-1 (– never). κ after "
        'training: on 250 test images, geometric means over layers and runs '
        '(`measure_conditioning`).', '',
        '| family | method | seeds | final top-1 per seed | mean ± std | Δ (σ_Δ) | epochs to '
        'reach baseline final | κ(A) | κ(C·O) | κ(X) | κ(tokens) | min / run |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|'
    ]
    for f in families:
        base = by.get((f, 'baseline'))
        for m in settings.methods:
            name = sweep_name(best[f]) if m == 'spectral' and best.get(f) is not None else m
            r = by.get((f, name))
            if r is None:
                continue
            lab = f'spectral λ*={best[f]:g}' if m == 'spectral' else m
            mean, sd = r['final']
            if base is not None and m != 'baseline':
                d = mean - base['final'][0]
                sig = math.hypot(sd, base['final'][1])
                delta = f'{d:+.2f} ({sig:.2f})'
                if r['seeds'] > 1 and base['seeds'] > 1 and abs(d) > 2 * sig:
                    delta = f'**{delta}**'
            else:
                delta = '–'
            runs = [x for x in records if (x['family'], x['method']) == (f, name)]
            kap = [
                _gmean([_gmean([lay[k] for lay in x['kappa']['layers']]) for x in runs])
                for k in KAPPA_KEYS
            ]
            tok = _gmean([x['kappa']['tokens'] for x in runs])
            lines.append(
                f"| {f} | {lab} | {', '.join(map(str, r['seed_list']))} | "
                f"{', '.join(f'{v:.2f}' for v in r['finals'])} | {mean:.2f} ± {sd:.2f} | "
                f"{delta} | {_fmt_reach(r['reach_runs'], r['epochs'])} of {r['epochs']} | " +
                ' | '.join(f'{k:.3g}'
                           for k in kap + [tok]) + f" | {r['minutes'] / r['seeds']:.1f} |")
    lines += [
        '', f"**λ sweep** of spectral conditioning (identity mode, C = λI on each of "
        f"W_Q, W_K, W_V), seed {settings.seeds[0]} only; λ* = the highest final top-1 "
        "(ties: the smaller λ), chosen on the test split (no separate validation split: a "
        "selection bias in favour of λ*, which the other seeds of λ* do not share). "
        'Entropy: attention entropy after training (nats; uniform rows: log N).', '',
        '| family | λ | final top-1 | epochs to reach baseline final | κ(A) | '
        'entropy | κ(W_Q) | min |', '|---|---|---|---|---|---|---|---|'
    ]
    for f in families:
        base = by.get((f, 'baseline'))
        if base is not None:
            lines.append(f"| {f} | 0 (baseline, seed {base['seed_list'][0]}) | "
                         f"{base['finals'][0]:.2f} | {_fmt_reach(base['reach_runs'][:1], 0)} | " +
                         _sweep_cells([
                             x for x in records if (x['family'], x['method'], x['seed']) ==
                             (f, 'baseline', base['seed_list'][0])
                         ][0]) + ' |')
        for lam in settings.lams:
            r = by.get((f, sweep_name(lam)))
            if r is None:
                continue
            rec = [
                x for x in records
                if (x['family'], x['method'], x['seed']) == (f, sweep_name(lam), settings.seeds[0])
            ]
            if not rec:
                continue
            i = r['seed_list'].index(settings.seeds[0])
            star = ' (λ*)' if best.get(f) == lam else ''
            lines.append(f"| {f} | {lam:g}{star} | {r['finals'][i]:.2f} | "
                         f"{_fmt_reach(r['reach_runs'][i:i + 1], 0)} | " + _sweep_cells(rec[0]) +
                         ' |')
    lines += [
        '', "**κ over training** (ConditionMonitorHook, the same 4 train images of each "
        'run before the first step and after every epoch): layer-mean κ at the start → '
        'end of training, geometric mean over the runs.', '',
        '| family | method | κ(A) | κ(C·O) | κ(X) | κ(W_Q) | κ(W_V) | κ(tokens) |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for f in families:
        for lab, rs in real_groups(records, task, f, settings.methods, best.get(f)).items():
            cells = []
            for key in ('kappa_attn', 'kappa_out_proj', 'kappa_x', 'kappa_wq', 'kappa_wv'):
                curves = _layer_curves(rs, key)
                if not curves:
                    cells.append('–')
                    continue
                first = _gmean([y[0] for _, y in curves])
                last = _gmean([y[-1] for _, y in curves])
                cells.append(f'{first:.3g} → {last:.3g}')
            tok = [r['kappa_train']['tokens'] for r in rs if r.get('kappa_train')]
            cells.append(f'{_gmean([t[0][1] for t in tok]):.3g} → '
                         f'{_gmean([t[-1][1] for t in tok]):.3g}' if tok and all(tok) else '–')
            lines.append(f'| {f} | {lab} | ' + ' | '.join(cells) + ' |')
    figs = [f'![{osp.basename(p)}]({osp.basename(p)})' for p in plots]
    return '\n'.join(lines + [''] + figs) + '\n'


def _sweep_cells(rec):
    lay = rec['kappa']['layers']
    ent = statistics.fmean(x['entropy_attn'] for x in lay) if 'entropy_attn' in lay[0] else None
    wq = _gmean([x['kappa_wq'] for x in lay]) if 'kappa_wq' in lay[0] else None
    return (f"{_gmean([x['kappa_attn'] for x in lay]):.3g} | "
            f"{f'{ent:.3g}' if ent is not None else '–'} | "
            f"{f'{wq:.3g}' if wq is not None else '–'} | {rec['seconds'] / 60:.1f}")


def write_docs(page, text, plots, tag):
    """The report into ``page`` between its ``<!-- tag:begin/end -->`` markers (a new page
    whole), plots into the page's folder (``docs/study.md`` -> ``docs/study/``)."""
    if osp.isfile(page):
        old = open(page).read()
        if f'<!-- {tag}:begin -->' not in old or f'<!-- {tag}:end -->' not in old:
            raise UserError(f'{page} exists without the <!-- {tag}:begin --> / '
                            f'<!-- {tag}:end --> markers this report goes between')
    fig_dir = osp.splitext(page)[0]
    os.makedirs(fig_dir, exist_ok=True)
    for p in plots:
        shutil.copy(p, fig_dir)
    write_markdown(page, text.replace('](', f']({osp.basename(fig_dir)}/'), tag=tag)
    print(f'wrote {page} (between its {tag} markers), plots in {fig_dir}/')


# --- the papers' κ claims on the trained models (tools/analysis_tools/conditioning.py) -------
# claim: (conditioned method, what the paper states, [(key of conditioning.csv, label)])
CLAIMS = {
    'tokens': ('tokens', 'ICCV 2025: conditioning the embedded tokens lowers κ(X) (ViT-B: '
               'about 10³ → 10¹)', [('tokens', 'κ(embedded tokens)'),
                                    ('kappa_x', 'κ(X), layer input')]),
    'spectral': ('spectral', 'NeurIPS 2025: W + C lowers κ(W_Q), κ(W_K), κ(W_V) (κ ≤ 2 for '
                 'the exact C; C = λI in the experiments)', [('kappa_wq', 'κ(W_Q)'),
                                                             ('kappa_wk', 'κ(W_K)'),
                                                             ('kappa_wv', 'κ(W_V)')]),
    'precond': ('precond', 'AISTATS 2026: the diagonal preconditioner lowers the condition '
                'number of the attention matrices', [('kappa_attn', 'κ(A)'),
                                                     ('kappa_out', 'κ(O) = κ(A V)'),
                                                     ('kappa_out_proj', 'κ(C·O), into proj')]),
}
CLAIM_IMAGES = 16


def claim_models(records, task, family, claim, best, sweep_seed):
    """``[(label, record)]`` of one claim: the baseline and the conditioned runs (every seed),
    and for spectral also the paper's λ = 10 (sweep run) when λ* is another λ."""
    method = CLAIMS[claim][0]
    groups = real_groups(records, task, family, ['baseline', method], best.get(family))
    out = [(f"{lab.split(' ')[0]}-s{r['seed']}", r) for lab, rs in groups.items() for r in rs]
    if claim == 'spectral' and best.get(family) not in (None, 10.):
        out += [(f'spectral-lam10-s{r["seed"]}', r) for r in records
                if (r['family'], r['method'], r['seed']) == (family, sweep_name(10.), sweep_seed)]
    return out


def run_claims(records, task, settings, best):
    """Measure each claim and family on the final checkpoints
    (:func:`~mmcondattn.analysis.condition_report.measure_models`, as
    ``tools/analysis_tools/conditioning.py`` does); returns ``{claim: {family: (that command,
    conditioning.csv rows)}}``."""
    import csv

    from .condition_report import measure_models
    out = {}
    for claim in CLAIMS:
        for family in TASKS[task][2]:
            models = claim_models(records, task, family, claim, best, settings.seeds[0])
            if not any(lab.startswith('baseline') for lab, _ in models) or \
                    all(lab.startswith('baseline') for lab, _ in models):
                continue
            d = osp.join(settings.out_dir, 'claims', f'{claim}_{family}')
            specs = [(lab, osp.join(settings.out_dir,
                                    r['config']), osp.join(settings.out_dir, r['checkpoint']))
                     for lab, r in models]
            measure_models(specs, d, num_images=CLAIM_IMAGES)
            cmd = [
                'tools/analysis_tools/conditioning.py', *specs[0][1:], '--compare',
                *[f'{c}={k}' for _, c, k in specs[1:]], '--labels', *[s[0] for s in specs],
                '--num-images',
                str(CLAIM_IMAGES), '--out-dir', d
            ]
            with open(osp.join(d, 'conditioning.csv')) as f:
                rows = list(csv.DictReader(f))
            out.setdefault(claim, {})[family] = ('python ' + ' '.join(cmd), rows)
    return out


def report_claims(claims, out_dir, best):
    """claims.md: per claim a table (per layer, geometric mean over seeds, baseline vs
    conditioned, and their ratio) and ``claim_<claim>.png``; returns (text, plots)."""
    plt = pyplot()
    lines, plots = [], []
    for claim, fams in claims.items():
        method, stated, keys = CLAIMS[claim]
        lines += [
            f'**{claim}**: {stated}. Measured on the first {CLAIM_IMAGES} test images '
            '(their test pipeline) for every seed; geometric means over seeds, the '
            'ratio conditioned / baseline in brackets.', ''
        ]
        groups_of = {}
        for family, (_, rows) in fams.items():
            groups = {}
            for row in rows:
                groups.setdefault(row['model'].rsplit('-s', 1)[0], []).append(row)
            groups_of[family] = groups
        conds = sorted({g for gs in groups_of.values() for g in gs if g != 'baseline'})
        heads = {'spectral': 'spectral at λ*', 'spectral-lam10': 'spectral at λ = 10 (paper)'}
        lines += [
            '| family | layer | quantity | baseline | ' +
            ' | '.join(heads.get(c, c) for c in conds) + ' |',
            '|---|---|---|---|' + '---|' * len(conds)
        ]
        fig, axes = plt.subplots(
            len(keys), len(fams), figsize=(4.2 * len(fams), 3.0 * len(keys)), squeeze=False)
        for j, (family, groups) in enumerate(groups_of.items()):
            for i, (key, label) in enumerate(keys):

                def series(g):
                    rows = groups[g]
                    if key == 'tokens':
                        return {
                            'tokens':
                            _gmean([float(r['kappa_x']) for r in rows if r['layer'] == 'tokens'])
                        }
                    layers = sorted({int(r['layer']) for r in rows if r['layer'] != 'tokens'})
                    return {
                        str(n): _gmean([float(r[key]) for r in rows if r['layer'] == str(n)])
                        for n in layers
                    }

                base = series('baseline')
                per = {g: series(g) for g in conds if g in groups}
                for layer, b in base.items():
                    cells = [
                        f'{per[g][layer]:.3g} (×{per[g][layer] / b:.2g})' if g in per else '–'
                        for g in conds
                    ]
                    fam = (f'{family} (λ*={best[family]:g})'
                           if claim == 'spectral' and best.get(family) is not None else family)
                    lines.append(f'| {fam} | {layer} | {label} | {b:.3g} | ' + ' | '.join(cells) +
                                 ' |')
                ax = axes[i][j]
                for g in ['baseline'] + conds:
                    if g not in groups:
                        continue
                    seeds = sorted({r['model'] for r in groups[g]})
                    for k, sd in enumerate(seeds):
                        rows = [r for r in groups[g] if r['model'] == sd]
                        if key == 'tokens':
                            xs, ys = [0], [
                                float(r['kappa_x']) for r in rows if r['layer'] == 'tokens'
                            ]
                        else:
                            rows = [r for r in rows if r['layer'] != 'tokens']
                            xs, ys = [int(r['layer']) for r in rows], [float(r[key]) for r in rows]
                        color = 'k' if g == 'baseline' else f'C{conds.index(g)}'
                        ax.plot(
                            xs, ys, marker='o', color=color, alpha=0.7, label=g if k == 0 else None)
                ax.set(
                    yscale='log',
                    title=f'{family}: {label}',
                    xlabel='embedded tokens' if key == 'tokens' else 'attention layer')
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
        fig.suptitle(f'{claim}: {stated}', fontsize=9)
        plots.append(save_figure(fig, osp.join(out_dir, f'claim_{claim}.png'), dpi=80))
        lines += ['', f'![claim_{claim}.png](claim_{claim}.png)', '', 'Commands:', '', '```bash'
                  ] + [cmd for cmd, _ in fams.values()] + ['```', '']
    return '\n'.join(lines) + '\n', plots


def run_study(settings: StudySettings) -> List[dict]:
    """Train (or reuse) every run of the plan, then write the reports; returns the records."""
    from mmengine.utils import ProgressBar
    s = settings
    os.makedirs(s.out_dir, exist_ok=True)
    plan = make_plan(s)
    data = {
        t: make_data(t, s.out_dir, s.scale_data, s.fmnist_root)
        for t in s.tasks if not s.report_only
    }
    start, records = time.perf_counter(), {}
    bar = ProgressBar(len(plan))
    for task, family, method, seed in plan:
        epochs = task_epochs(task, s)
        name, cond, num_train = resolve(task, family, method, s)
        if name is None:
            rec = None
        elif s.report_only:
            rec = finished_run(task, family, name, seed, epochs, s.out_dir, cond, num_train)
        else:
            rec = train_one(task, family, name, seed, epochs, data[task], s.out_dir, cond,
                            num_train, s.config_root)
        if rec is not None:
            records[(task, family, name, seed)] = rec
        bar.update()
    records = list(records.values())
    if not records:
        raise UserError(f'no finished run of this plan under {s.out_dir}/runs')
    seconds = time.perf_counter() - start
    with open(osp.join(s.out_dir, 'results.json'), 'w') as f:
        json.dump(records, f)
    shapes = [r for r in records if r['task'] not in SWEEP_TASKS]
    if shapes:
        plots = plot(shapes, s.methods, s.out_dir)
        text = report(summarize(shapes, s.methods), s, seconds, plots)
        _publish(s, 'study.md', 'study', text, plots)
    for task in SWEEP_TASKS:
        recs = [r for r in records if r['task'] == task]
        if not recs:
            continue
        best = {
            f: best_lam(task, f, s.lams, s.seeds[0], s.fmnist_epochs, s.out_dir, s.fmnist_train)
            for f in TASKS[task][2]
        }
        plots = plot_real(recs, task, s.methods, s.seeds[0], best, s.out_dir)
        text = report_real(recs, task, s, seconds, plots, best)
        _publish(s, f'study_{task}.md', f'study-{task}', text, plots)
        if s.claims:
            claims = run_claims(recs, task, s, best)
            if not claims:
                raise UserError('--claims: no family has both baseline and conditioned runs')
            text, plots = report_claims(claims, s.out_dir, best)
            _publish(s, f'claims_{task}.md', f'claims-{task}', text, plots)
    return records


def _publish(settings, name, tag, text, plots):
    """A report to ``out_dir/name``, to stdout and, with ``docs``, into that page between
    its ``tag`` markers."""
    with open(osp.join(settings.out_dir, name), 'w') as f:
        f.write(text)
    print('\n' + text)
    if settings.docs:
        write_docs(settings.docs, text, plots, tag)
