"""A small-scale study of what conditioning does, rerun with one command on a CPU machine.

    python tools/analysis_tools/conditioning_study.py                 # the full study
    python tools/analysis_tools/conditioning_study.py --docs docs/study.md

For each task (classification on the generated ImageNet-style shapes, Mask R-CNN on the
generated COCO shapes), each tiny backbone of ``configs/study/``, each method (baseline,
precond, spectral, tokens, all three) and each seed, it trains the config with the real
mmengine runner and stock mmdet / mmpretrain heads and metrics, validating every epoch. It
writes under ``--out-dir``:

* ``results.json``: every run's validation curve, final metric, wall time and the κ of its
  attention layers after training (per layer, measured by
  :func:`mmcondattn.models.probe.measure_conditioning` on a probe batch of the val set);
* ``study.md``: final metric (mean ± std over seeds), epochs each conditioned model needs to
  reach the baseline's final metric, κ(A), κ(O), κ(X) means after training;
* ``curves_<task>_<family>.png`` (mean ± std over seeds per method) and
  ``kappa_<task>_<family>.png`` (κ per layer after training, methods side by side).

Runs finished in an earlier call (their ``run.json`` exists) are reused, so an interrupted
study continues where it stopped. ``--docs`` copies the report and plots into the docs.
"""
import argparse
import contextlib
import copy
import json
import os
import os.path as osp
import shutil
import statistics
import sys
import time
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from mmcondattn.engine.launch import UserError, exits_cleanly, load_config  # noqa: E402

# task: (metric key in the val logs, its label, {family: config})
TASKS = {
    'cls': ('accuracy/top1', 'top-1 (%)', {
        'xcit': 'configs/study/xcit-tiny_shapes-cls.py',
        'vit': 'configs/study/vit-tiny_shapes-cls.py',
        'swin': 'configs/study/swin-tiny_shapes-cls.py',
    }),
    'det': ('coco/bbox_mAP_50', 'box AP50', {
        'xcit': 'configs/study/xcit-tiny_fpn_shapes-det.py',
    }),
}
METHODS = {
    'baseline': dict(),
    'precond': dict(precond=dict()),
    'spectral': dict(spectral=dict()),  # the paper's lam = 10
    'spectral_lam1': dict(spectral=dict(lam=1.)),
    # the exact svd solver: the flat shapes give token matrices with repeated rows (patches
    # inside one shape), which only svd conditions (docs/methods.md)
    'tokens': dict(tokens=dict(solver='svd')),
    'all': dict(precond=dict(), spectral=dict(), tokens=dict(solver='svd')),
}
DEFAULT_METHODS = ['baseline', 'precond', 'spectral', 'tokens', 'all']
# generated data: (format, folder, train images (per class for imagenet), val images, size,
# extra generator options); classification: large shapes (0.4-0.8 of the side) at 32 px
DATA = {'cls': ('imagenet', 'shapes_imagenet', 128, 32, 32, dict(size_range=(0.4, 0.8))),
        'det': ('coco', 'shapes_coco', 32, 16, 96, dict())}
# κ(A), κ(C·O) (the head outputs the projection receives: preconditioned where precond is
# on, else O), κ(X) (layer inputs); see mmcondattn.models.probe.LAYER_KEYS
KAPPA_KEYS = ('kappa_attn', 'kappa_out_proj', 'kappa_x')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Baseline vs conditioned tiny models on the '
                                'generated datasets, several seeds (see the module docstring).')
    p.add_argument('--out-dir', default='work_dirs/conditioning_study')
    p.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    p.add_argument('--families', nargs='+', default=None,
                   help='default: every family of the chosen tasks')
    p.add_argument('--methods', nargs='+', default=DEFAULT_METHODS)
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--cls-epochs', type=int, default=30)
    p.add_argument('--det-epochs', type=int, default=10)
    p.add_argument('--scale-data', type=float, default=1.0,
                   help='fraction of the default number of generated images (tests use less)')
    p.add_argument('--report-only', action='store_true',
                   help='train nothing: report the finished runs of the plan (e.g. while a '
                   'long study runs, or after it was cut short)')
    p.add_argument('--docs', help='also write the report into this page, between its '
                   '<!-- study:begin/end --> markers if it has them (plots go to <name>/), '
                   'e.g. docs/study.md')
    args = p.parse_args(argv)
    for m in args.methods:
        if m not in METHODS:
            raise UserError(f'unknown method {m!r}; valid: {", ".join(METHODS)}')
    known = [f for t in args.tasks for f in TASKS[t][2]]
    args.families = args.families or list(dict.fromkeys(known))
    for f in args.families:
        if f not in known:
            valid = sorted({f for t in args.tasks for f in TASKS[t][2]})
            raise UserError(f'unknown family {f!r} for tasks {args.tasks}; valid: {valid}')
    if 'baseline' not in args.methods:
        raise UserError('--methods must include baseline (the conditioned runs are compared '
                        'with it)')
    return args


def make_data(task, out_dir, scale):
    """Generate the task's dataset under ``out_dir/data`` (kept if already there)."""
    from mmcondattn.datasets import make_coco_shapes, make_imagenet_folder
    fmt, name, n_train, n_val, size, extra = DATA[task]
    n_train, n_val = max(2, round(n_train * scale)), max(2, round(n_val * scale))
    root = osp.join(out_dir, 'data', f'{name}_{n_train}_{n_val}_{size}')
    if not osp.isfile(osp.join(root, 'done')):
        shutil.rmtree(root, ignore_errors=True)
        make = make_coco_shapes if fmt == 'coco' else make_imagenet_folder
        make(root, n_train, n_val, size, seed=2026, **extra)
        open(osp.join(root, 'done'), 'w').close()
    return osp.abspath(root)


def run_config(task, family, method, seed, epochs, data_root, work_dir):
    """The config of one run: the family's study config with this method, seed and data."""
    cfg = load_config(osp.join(REPO, TASKS[task][2][family]))
    cfg.model.backbone.conditioning = copy.deepcopy(METHODS[method])
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'{task}_{family}_{method}_seed{seed}'
    cfg.log_level = 'WARNING'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root + '/'
    if task == 'det':
        ann = osp.join(data_root, 'annotations/instances_val.json')
        cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = ann
        milestones = [round(epochs * 0.75), round(epochs * 0.92)]
        cfg.param_scheduler[-1].update(end=epochs, milestones=milestones)
    else:
        cfg.param_scheduler[-1].update(end=epochs)
    cfg.train_cfg.update(max_epochs=epochs, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1000)
    return cfg


def val_curve(work_dir, key, epochs):
    """[(epoch, value)] of ``key`` in the run's val logs (mmengine's vis_data/scalars.json)
    for epochs 1..``epochs``. An epoch without the key scores 0: CocoMetric logs no AP when a
    detector makes no detection at all (early in training)."""
    curve = {e: 0. for e in range(1, epochs + 1)}
    for ts in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, ts, 'vis_data', 'scalars.json')
        if osp.isfile(path):
            for line in open(path):
                row = json.loads(line)
                if key in row:
                    curve[row['step']] = row[key]
    return sorted(curve.items())


def probe_kappa(runner):
    """κ of the trained model on one val batch (measure_conditioning): per attention layer
    (means over images and heads) and of the embedded patch tokens."""
    from mmcondattn.models.probe import measure_conditioning
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    batch = model.data_preprocessor(next(iter(runner.val_dataloader)), False)
    result = measure_conditioning(model.backbone, batch['inputs'])
    return dict(layers=[{k: row[k] for k in KAPPA_KEYS} for row in result['layers']],
                tokens=(result['tokens'] or {}).get('kappa'))


def _work_dir(out_dir, task, family, method, seed):
    return osp.join(out_dir, 'runs', task, family, method, f'seed{seed}')


def finished_run(task, family, method, seed, epochs, out_dir):
    """The record of a finished run with these settings, or None."""
    done = osp.join(_work_dir(out_dir, task, family, method, seed), 'run.json')
    if osp.isfile(done):
        with open(done) as f:
            rec = json.load(f)
        if (rec.get('epochs'), rec.get('conditioning')) == (epochs, METHODS[method]):
            return rec
    return None


def train_one(task, family, method, seed, epochs, data_root, out_dir):
    """Train (or reuse) one run; returns its record."""
    rec = finished_run(task, family, method, seed, epochs, out_dir)
    if rec is not None:
        return rec
    work_dir = _work_dir(out_dir, task, family, method, seed)
    done = osp.join(work_dir, 'run.json')
    shutil.rmtree(work_dir, ignore_errors=True)  # a stale or interrupted run
    from mmengine.runner import Runner
    start = time.perf_counter()
    runner = Runner.from_cfg(run_config(task, family, method, seed, epochs, data_root,
                                        work_dir))
    # pycocotools prints its tables on stdout: into the run's folder, not the console
    with open(osp.join(work_dir, 'stdout.txt'), 'w') as out, contextlib.redirect_stdout(out):
        runner.train()
    rec = dict(task=task, family=family, method=method, seed=seed, epochs=epochs,
               conditioning=METHODS[method],
               seconds=round(time.perf_counter() - start, 1),
               curve=val_curve(work_dir, TASKS[task][0], epochs), kappa=probe_kappa(runner))
    for h in list(runner.logger.handlers):  # free the run's log file
        h.close()
        runner.logger.removeHandler(h)
    with open(done, 'w') as f:
        json.dump(rec, f)
    return rec


# --- report -------------------------------------------------------------------------------
def _mean_std(xs):
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.)


def _mean_curve(runs):
    """Epochs and the mean / std over seeds of the val metric at each epoch."""
    epochs = [e for e, _ in runs[0]['curve']]
    vals = [[dict(r['curve'])[e] for r in runs] for e in epochs]
    return epochs, [_mean_std(v)[0] for v in vals], [_mean_std(v)[1] for v in vals]


def summarize(records, methods):
    """Rows of the report: one per (task, family, method)."""
    groups = {}
    for r in records:
        groups.setdefault((r['task'], r['family'], r['method']), []).append(r)
    rows = []
    for (task, family, method), runs in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][1], methods.index(kv[0][2]))):
        epochs, mean, _ = _mean_curve(runs)
        base = groups.get((task, family, 'baseline'))
        base_final = _mean_curve(base)[1][-1] if base else None
        reach = next((e for e, v in zip(epochs, mean) if v >= base_final), None) \
            if base_final is not None else None
        finals = [r['curve'][-1][1] for r in runs]
        kappa = {k: statistics.fmean(statistics.fmean(lay[k] for lay in r['kappa']['layers'])
                                     for r in runs) for k in KAPPA_KEYS}
        if all(r['kappa']['tokens'] is not None for r in runs):
            kappa['kappa_tokens'] = statistics.fmean(r['kappa']['tokens'] for r in runs)
        rows.append(dict(task=task, family=family, method=method, seeds=len(runs),
                         final=_mean_std(finals), reach=reach, epochs=epochs[-1],
                         minutes=sum(r['seconds'] for r in runs) / 60, kappa=kappa))
    return rows


def plot(records, methods, out_dir):
    """Validation curves and κ per layer, one PNG each per (task, family); returns paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    paths = []
    pairs = sorted({(r['task'], r['family']) for r in records})
    for task, family in pairs:
        runs = {m: [r for r in records if (r['task'], r['family'], r['method']) ==
                    (task, family, m)] for m in methods}
        runs = {m: rs for m, rs in runs.items() if rs}
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, rs in runs.items():
            e, mean, std = _mean_curve(rs)
            ax.plot(e, mean, label=m, lw=2 if m == 'baseline' else 1.2)
            ax.fill_between(e, [a - b for a, b in zip(mean, std)],
                            [a + b for a, b in zip(mean, std)], alpha=0.15)
        ax.set(xlabel='epoch', ylabel=TASKS[task][1],
               title=f'{task} / {family}: validation, mean ± std over seeds')
        ax.legend(fontsize=8)
        paths.append(osp.join(out_dir, f'curves_{task}_{family}.png'))
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

        fig, axes = plt.subplots(1, len(KAPPA_KEYS), figsize=(4 * len(KAPPA_KEYS), 3.6))
        for ax, k in zip(axes, KAPPA_KEYS):
            for m, rs in runs.items():
                layers = [statistics.fmean(r['kappa']['layers'][i][k] for r in rs)
                          for i in range(len(rs[0]['kappa']['layers']))]
                ax.plot(range(len(layers)), layers, marker='o', label=m)
            ax.set(yscale='log', xlabel='attention layer', title=f'{k} after training')
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].legend(fontsize=8)
        fig.suptitle(f'{task} / {family}', fontsize=10)
        paths.append(osp.join(out_dir, f'kappa_{task}_{family}.png'))
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def report(rows, args, seconds, plots):
    """The markdown report."""
    lines = [
        '| task | family | method | seeds | final (mean ± std) | epochs to reach baseline '
        'final | κ(A) | κ(C·O) | κ(X) | κ(tokens) | train min |',
        '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        reach = (f"{r['reach']} / {r['epochs']}" if r['reach'] is not None else
                 f"not reached in {r['epochs']}")
        kap = [f"{r['kappa'][k]:.3g}" if k in r['kappa'] else '-'
               for k in KAPPA_KEYS + ('kappa_tokens', )]
        lines.append(f"| {r['task']} | {r['family']} | {r['method']} | {r['seeds']} | "
                     f"{r['final'][0]:.3f} ± {r['final'][1]:.3f} | {reach} | "
                     f"{' | '.join(kap)} | {r['minutes']:.1f} |")
    cmd = 'python tools/analysis_tools/conditioning_study.py ' + ' '.join(sys.argv[1:])
    head = [f'Command: `{cmd.strip()}`  ',
            f'Wall time of this call: {seconds / 60:.1f} min; training time of the runs '
            f"reported (column 'train min'): {sum(r['minutes'] for r in rows):.0f} min; "
            f'machine: {os.cpu_count()} CPU cores, load average at the end '
            f'{os.getloadavg()[0]:.1f}.  ',
            'Metrics: classification top-1 (%) on the generated val split; detection '
            'COCO box AP50 (CocoMetric, 0-1). κ after training, on one val batch '
            '(`mmcondattn.models.probe.measure_conditioning`): κ(A) attention matrices, κ(C·O) '
            'head outputs as the projection receives them (preconditioned where precond is '
            'on), κ(X) layer inputs (means over layers, heads, images); κ(tokens) '
            'the embedded patch tokens the first layer receives.', '']
    figs = [f'![{osp.basename(p)}]({osp.basename(p)})' for p in plots]
    return '\n'.join(head + lines + [''] + figs) + '\n'


@exits_cleanly
def main(argv=None):
    args = parse_args(argv)
    import mmcondattn  # noqa: F401  registers modules, applies the stack shims
    from mmengine.utils import ProgressBar
    os.makedirs(args.out_dir, exist_ok=True)
    # seed-major: a study cut short still has every method of the first seeds
    plan = [(t, f, m, s) for t in args.tasks for f in args.families if f in TASKS[t][2]
            for s in args.seeds for m in args.methods]
    data = {t: make_data(t, args.out_dir, args.scale_data) for t in args.tasks
            if not args.report_only}
    start, records = time.perf_counter(), []
    bar = ProgressBar(len(plan))
    for task, family, method, seed in plan:
        epochs = args.cls_epochs if task == 'cls' else args.det_epochs
        if args.report_only:
            rec = finished_run(task, family, method, seed, epochs, args.out_dir)
            records += [rec] if rec else []
        else:
            records.append(train_one(task, family, method, seed, epochs, data[task],
                                     args.out_dir))
        bar.update()
    if not records:
        raise UserError(f'no finished run of this plan under {args.out_dir}/runs')
    seconds = time.perf_counter() - start
    with open(osp.join(args.out_dir, 'results.json'), 'w') as f:
        json.dump(records, f)
    plots = plot(records, args.methods, args.out_dir)
    text = report(summarize(records, args.methods), args, seconds, plots)
    with open(osp.join(args.out_dir, 'study.md'), 'w') as f:
        f.write(text)
    print('\n' + text)
    if args.docs:  # plots next to the page, the report between its study markers
        from mmcondattn.benchmark import write_markdown
        fig_dir = osp.splitext(args.docs)[0]
        os.makedirs(fig_dir, exist_ok=True)
        for p in plots:
            shutil.copy(p, fig_dir)
        write_markdown(args.docs, text.replace('](', f']({osp.basename(fig_dir)}/'),
                       tag='study')
        print(f'wrote {args.docs} (between its study markers), plots in {fig_dir}/')
    return 0


if __name__ == '__main__':
    sys.exit(main())
