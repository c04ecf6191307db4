"""Pretrain -> fine-tune on real data: conditioning switched on over weights trained without it.

    python tools/analysis_tools/finetune_study.py --docs docs/study.md

The ImageNet -> COCO path of a detection user, in small, on the real Fashion-MNIST
(`make data-fmnist`): each tiny study backbone (configs/study/<family>-tiny_fmnist.py) is
pretrained on task A (classes 0-4: T-shirt, trouser, pullover, dress, coat), then its
backbone alone is loaded (``init_cfg`` Pretrained, a new head) and fine-tuned on task B
(classes 5-9: sandal, shirt, sneaker, bag, ankle boot) with AdamW at a constant lr. Starts,
for each method:

* ``plain``: pretrained and fine-tuned without conditioning (the reference);
* ``at_once``: plain pretraining, the method switched on at the fine-tune's first step;
* ``warm``: plain pretraining, the method ramped in over the first fine-tune epoch
  (``warm_start``; the first step computes what the checkpoint computes);
* ``with``: pretrained with the method, fine-tuned with it (the papers' path).

Spectral's λ is chosen per family and start on a validation split of B (held out of B's
training images; seed 0 of each λ in ``--lams``), the table reports B's test split. ``at
load``: top-1 on A's test split of the pretrained classifier as loaded into the conditioned
model (plain pretraining; head included), against the plain model. Finished runs are
reused (their ``run.json``), so an interrupted study continues.
"""
import argparse
import contextlib
import copy
import json
import math
import os
import os.path as osp
import shutil
import statistics
import struct
import sys
import time
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

try:
    import numpy as np

    import mmcondattn.openmmlab  # noqa: F401  registers the backbones
    from mmcondattn.analysis.logs import read_scalars
    from mmcondattn.analysis.report import command_line, pyplot, save_figure, write_markdown
    from mmcondattn.datasets.fashion_mnist import FILES, check_idx
    from mmcondattn.engine.launch import UserError, exits_cleanly, load_config
except ImportError as e:  # a broken stack (mmcondattn.stack.StackError): one line
    sys.exit(f'error: {e}')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FAMILIES = ('vit', 'swin', 'xcit')
METHODS = {'precond': dict(precond=dict()), 'spectral': None, 'tokens': dict(tokens=dict())}
STARTS = ('plain', 'at_once', 'warm', 'with')
TASK_A, TASK_B = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
TAG = 'study-finetune'


# --- data: two tasks of Fashion-MNIST as IDX files the stock FashionMNIST reads -------------
def _read_idx(path):
    with open(path, 'rb') as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(f'>{ndim}I', raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _write_idx(path, array):
    with open(path, 'wb') as f:
        f.write(struct.pack('>BBBB', 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f'>{array.ndim}I', *array.shape))
        f.write(np.ascontiguousarray(array, np.uint8).tobytes())


def _write_split(folder, train, test):
    """``folder`` with the four IDX files: (images, labels) ``train`` and ``test``."""
    os.makedirs(folder, exist_ok=True)
    for split, (img, lab) in (('train', train), ('t10k', test)):
        _write_idx(osp.join(folder, f'{split}-images-idx3-ubyte'), img)
        _write_idx(osp.join(folder, f'{split}-labels-idx1-ubyte'), lab)


def make_tasks(fmnist_root, out_dir, num_val):
    """Task A and B folders under ``out_dir/data`` (labels renumbered 0-4): ``a`` (A's train
    and test images), ``b`` (B's train images but the last ``num_val``; B's test images) and
    ``b_val`` (those ``num_val`` held-out train images, as its test split)."""
    root = osp.join(out_dir, 'data')
    if osp.isfile(osp.join(root, 'done')):
        return root
    try:
        arrays = {n: _read_idx(osp.join(fmnist_root, n)) for n in FILES}
        for n, (split, kind) in FILES.items():
            check_idx(osp.join(fmnist_root, n), kind, len(arrays[n]), 28)
    except (OSError, ValueError) as e:
        raise UserError(f'Fashion-MNIST is not ready in {fmnist_root} ({e}); run '
                        '`make data-fmnist`') from None

    def task(split, classes):
        img, lab = arrays[f'{split}-images-idx3-ubyte'], arrays[f'{split}-labels-idx1-ubyte']
        keep = np.isin(lab, classes)
        return img[keep], np.searchsorted(classes, lab[keep]).astype(np.uint8)

    a_train, a_test = task('train', TASK_A), task('t10k', TASK_A)
    (b_img, b_lab), b_test = task('train', TASK_B), task('t10k', TASK_B)
    b_train, b_val = (b_img[:-num_val], b_lab[:-num_val]), (b_img[-num_val:], b_lab[-num_val:])
    tmp = f'{root}.part{os.getpid()}'  # written aside, then moved: several studies may start
    _write_split(osp.join(tmp, 'a'), a_train, a_test)
    _write_split(osp.join(tmp, 'b'), b_train, b_test)
    _write_split(osp.join(tmp, 'b_val'), b_val, b_val)
    open(osp.join(tmp, 'done'), 'w').close()
    try:
        os.rename(tmp, root)
    except OSError:  # another study was first
        shutil.rmtree(tmp)
    return root


# --- one run: a study config on task A or B ---------------------------------------------------
def _config(family, data, epochs, num_train, seed, work_dir, conditioning, args):
    cfg = load_config(osp.join(REPO, f'configs/study/{family}-tiny_fmnist.py'))
    cfg.model.backbone.conditioning = copy.deepcopy(conditioning)
    cfg.model.head.num_classes = len(TASK_A)
    cfg.model.data_preprocessor.num_classes = len(TASK_A)
    cfg.data_preprocessor.num_classes = len(TASK_A)
    cfg.train_dataloader.dataset.update(data_prefix=data['train'] + '/', indices=num_train)
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_prefix = data['val'] + '/'
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.test_dataloader.dataset.data_prefix = data['test'] + '/'
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.work_dir, cfg.log_level = work_dir, 'WARNING'
    cfg.custom_hooks = []  # κ is not what this study measures: no monitor hook
    cfg.train_cfg.update(max_epochs=epochs, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1000)
    if data.get('backbone') is None:  # pretraining: the study's schedule
        cfg.param_scheduler[-1].update(end=epochs)
    else:  # fine-tuning: the pretrained backbone, a new head, constant lr
        cfg.model.backbone.init_cfg = dict(
            type='Pretrained', checkpoint=data['backbone'], prefix='backbone.')
        cfg.optim_wrapper.optimizer.lr = args.finetune_lr
        cfg.param_scheduler = []
    return cfg


def _runner(cfg):
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)


def _close(runner):
    for h in list(runner.logger.handlers):  # free the run's log file
        h.close()
        runner.logger.removeHandler(h)


def train_run(name, family, data, epochs, num_train, seed, conditioning, args):
    """Train (or reuse) one run under ``out_dir/runs/<name>``; returns its record: val curve,
    test top-1, checkpoint, seconds."""
    work_dir = osp.join(args.out_dir, 'runs', name)
    done = osp.join(work_dir, 'run.json')
    if osp.isfile(done):
        with open(done) as f:
            return json.load(f)
    shutil.rmtree(work_dir, ignore_errors=True)
    start = time.perf_counter()
    runner = _runner(_config(family, data, epochs, num_train, seed, work_dir, conditioning, args))
    with open(osp.join(work_dir, 'stdout.txt'), 'w') as out, contextlib.redirect_stdout(out):
        runner.train()
        test = runner.test()
    _close(runner)
    curve = read_scalars(work_dir, lambda k: k == 'accuracy/top1').get('accuracy/top1', {})
    rec = dict(
        name=name,
        conditioning=conditioning,
        seconds=round(time.perf_counter() - start, 1),
        curve=sorted(curve.items()),
        test=test['accuracy/top1'],
        checkpoint=osp.join(work_dir, f'epoch_{epochs}.pth'))
    with open(done, 'w') as f:
        json.dump(rec, f)
    print(f'{name}: test top-1 {rec["test"]:.2f} ({rec["seconds"]:.0f} s)', flush=True)
    return rec


def at_load(name, family, data, checkpoint, conditioning, args):
    """Top-1 on task A's test split of ``checkpoint`` (a whole classifier) loaded into the
    model with ``conditioning`` (``load_from``, no training); reused when done."""
    path = osp.join(args.out_dir, 'at_load', name + '.json')
    if osp.isfile(path):
        with open(path) as f:
            return json.load(f)['top1']
    work_dir = osp.join(args.out_dir, 'at_load', name)
    cfg = _config(family, dict(train=data, val=data, test=data), 1, 8, 0, work_dir, conditioning,
                  args)
    cfg.load_from = checkpoint
    runner = _runner(cfg)
    with open(os.devnull, 'w') as out, contextlib.redirect_stdout(out):
        top1 = runner.test()['accuracy/top1']
    _close(runner)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(dict(top1=top1, conditioning=conditioning), f)
    return top1


# --- the plan ------------------------------------------------------------------------------
def method_cfg(method, lam=None):
    return dict(spectral=dict(lam=lam)) if method == 'spectral' else copy.deepcopy(METHODS[method])


def pretrain(family, cond_name, conditioning, seed, root, args):
    data = dict(train=osp.join(root, 'a'), val=osp.join(root, 'a'), test=osp.join(root, 'a'))
    return train_run(f'pretrain/{family}/{cond_name}/seed{seed}', family, data,
                     args.pretrain_epochs, args.pretrain_train, seed, conditioning, args)


def finetune(family, start, method, lam, seed, root, args):
    """One fine-tune run of ``start`` (see the module docstring) with ``method``."""
    cond = {} if start == 'plain' else method_cfg(method, lam)
    tag = 'plain' if start == 'plain' else method + (f'_lam{lam:g}' if lam is not None else '')
    source = pretrain(family, tag if start == 'with' else 'plain', cond if start == 'with' else {},
                      seed, root, args)
    if start == 'warm':
        iters = math.ceil(args.finetune_train / 32)  # one epoch (batch 32)
        cond = dict(cond, warm_start=dict(iters=iters))
    data = dict(
        train=osp.join(root, 'b'),
        val=osp.join(root, 'b_val'),
        test=osp.join(root, 'b'),
        backbone=source['checkpoint'])
    name = f'finetune/{family}/{start}/{tag}/seed{seed}'
    return train_run(name, family, data, args.finetune_epochs, args.finetune_train, seed, cond,
                     args)


def best_lam(family, start, root, args):
    """The λ of ``--lams`` with the best final validation top-1 (seed 0; ties: smaller λ)."""
    scores = []
    for lam in args.lams:
        rec = finetune(family, start, 'spectral', lam, args.seeds[0], root, args)
        scores.append((-rec['curve'][-1][1], lam))
    return min(scores)[1]


def run(args):
    """Every run of the plan (seed-major), then the report; returns the records."""
    root = make_tasks(args.fmnist_root, args.out_dir, args.val)
    rows = []
    for family in args.families:
        lams = {
            s: best_lam(family, s, root, args)
            for s in STARTS[1:]
        } if 'spectral' in args.methods else {}
        for seed in args.seeds:
            rows.append(
                dict(
                    family=family,
                    start='plain',
                    method='-',
                    seed=seed,
                    **finetune(family, 'plain', None, None, seed, root, args)))
            for method in args.methods:
                for start in STARTS[1:]:
                    lam = lams.get(start) if method == 'spectral' else None
                    rec = finetune(family, start, method, lam, seed, root, args)
                    rows.append(
                        dict(family=family, start=start, method=method, seed=seed, lam=lam, **rec))
        plain = pretrain(family, 'plain', {}, args.seeds[0], root, args)
        for method in args.methods:
            for start in ('at_once', 'warm'):
                lam = lams.get(start) if method == 'spectral' else None
                cond = method_cfg(method, lam)
                if start == 'warm':
                    cond['warm_start'] = dict(iters=10)
                top1 = at_load(f'{family}_{method}_{start}', family, osp.join(root, 'a'),
                               plain['checkpoint'], cond, args)
                rows.append(dict(family=family, start=start, method=method, at_load=top1))
        rows.append(
            dict(
                family=family,
                start='plain',
                method='-',
                at_load=at_load(f'{family}_plain', family, osp.join(root, 'a'), plain['checkpoint'],
                                {}, args)))
    return rows


# --- the report ------------------------------------------------------------------------------
def _stats(xs):
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.


def table(rows, args):
    """The markdown table: test top-1 after fine-tuning (mean ± std over seeds, Δ to plain,
    bold beyond 2σ_Δ), at-load top-1 on task A, λ."""
    out = [
        '| family | method | start | λ | at load (A, %) | fine-tuned (B test, %) per seed | '
        'mean ± std | Δ vs plain (σ_Δ) |', '|---|---|---|---|---|---|---|---|'
    ]
    for family in args.families:
        fam = [r for r in rows if r['family'] == family]
        runs = {(r['start'], r['method']): [] for r in fam}
        loads = {}
        for r in fam:
            if 'test' in r:
                runs[(r['start'], r['method'])].append(r)
            else:
                loads[(r['start'], r['method'])] = r['at_load']
        base = _stats([r['test'] for r in runs[('plain', '-')]])
        for (start, method), rs in runs.items():
            if not rs:
                continue
            mean, sd = _stats([r['test'] for r in rs])
            delta = '–'
            if start != 'plain':
                d, sig = mean - base[0], math.hypot(sd, base[1])
                delta = f'{d:+.2f} ({sig:.2f})'
                if len(rs) > 1 and abs(d) > 2 * sig:
                    delta = f'**{delta}**'
            lam, load = rs[0].get('lam'), loads.get((start, method))
            lam = '' if lam is None else f'{lam:g}'
            load = '' if load is None else f'{load:.1f}'
            per_seed = ', '.join(f"{r['test']:.1f}" for r in rs)
            out.append(f'| {family} | {method} | {start} | {lam} | {load} | {per_seed} | '
                       f'{mean:.2f} ± {sd:.2f} | {delta} |')
    return out


def plot(rows, args):
    """curves_finetune_<family>.png: validation top-1 over fine-tuning epochs (mean over
    seeds) per start and method."""
    plt = pyplot()
    paths = []
    for family in args.families:
        fig, axes = plt.subplots(
            1, len(args.methods), figsize=(4 * len(args.methods), 3.2), squeeze=False)
        for ax, method in zip(axes[0], args.methods):
            for start in STARTS:
                m = '-' if start == 'plain' else method
                rs = [
                    r for r in rows
                    if (r['family'], r['start'], r['method']) == (family, start, m) and 'curve' in r
                ]
                if rs:
                    ys = np.mean([[v for _, v in r['curve']] for r in rs], axis=0)
                    ax.plot(range(1, len(ys) + 1), ys, marker='o', label=start)
            ax.set(title=f'{family}: {method}', xlabel='fine-tune epoch', ylabel='val top-1 (%)')
            ax.set_xticks(range(1, args.finetune_epochs + 1))
            ax.legend(fontsize=7)
        paths.append(save_figure(fig, osp.join(args.out_dir, f'curves_finetune_{family}.png')))
    return paths


def report(rows, args, seconds):
    minutes = sum(r.get('seconds', 0) for r in rows) / 60
    lines = [
        f'Command: `{command_line(root=REPO)}`  ',
        f'Training time of the runs: {minutes:.0f} min (one thread each); this call '
        f'{seconds / 60:.1f} min.  ',
        f'Pretraining: task A (Fashion-MNIST classes 0-4), the first {args.pretrain_train} '
        f'of its train images, {args.pretrain_epochs} epochs (the study schedule). '
        f'Fine-tuning: task B (classes 5-9), {args.finetune_train} train images, '
        f'{args.finetune_epochs} epochs, AdamW lr {args.finetune_lr:g} constant, backbone '
        'from the pretrained classifier (`init_cfg` Pretrained), new head; curves on '
        f'{args.val} held-out B train images (validation: λ chosen there on seed '
        f'{args.seeds[0]} among {", ".join(f"{x:g}" for x in args.lams)}), the table on B\'s '
        'test split (5,000 images). Warm start: one fine-tune epoch. At load: the plain '
        'pretrained classifier (head included) loaded into the conditioned model, top-1 on '
        "A's test split (5,000 images). Δ: mean minus plain's; σ_Δ = √(σ² + σ_plain²); "
        '**bold** when |Δ| > 2σ_Δ.', ''
    ] + table(rows, args)
    plots = plot(rows, args)
    lines += [''] + [f'![{osp.basename(p)}]({osp.basename(p)})' for p in plots]
    text = '\n'.join(lines)
    write_markdown(osp.join(args.out_dir, 'study_finetune.md'), text)
    if args.docs:
        fig_dir = osp.splitext(args.docs)[0]
        os.makedirs(fig_dir, exist_ok=True)
        for p in plots:
            shutil.copy(p, fig_dir)
        write_markdown(args.docs, text.replace('](', f']({osp.basename(fig_dir)}/'), tag=TAG)
    print(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out-dir', default='work_dirs/finetune_study')
    p.add_argument('--families', nargs='+', default=list(FAMILIES), choices=FAMILIES)
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument(
        '--lams',
        nargs='+',
        type=float,
        default=[1., 10.],
        help='spectral λ candidates, chosen on the validation split')
    p.add_argument('--pretrain-epochs', type=int, default=5)
    p.add_argument('--pretrain-train', type=int, default=2000)
    p.add_argument('--finetune-epochs', type=int, default=3)
    p.add_argument('--finetune-train', type=int, default=1000)
    p.add_argument('--finetune-lr', type=float, default=3e-4)
    p.add_argument('--val', type=int, default=1000, help='held-out B train images')
    p.add_argument('--fmnist-root', default='data/fashion_mnist')
    p.add_argument('--docs', default=None, help=f'a page with <!-- {TAG}:begin/end --> markers')
    args = p.parse_args(argv)
    for name in ('pretrain_epochs', 'pretrain_train', 'finetune_epochs', 'finetune_train', 'val'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    if any(lam < 0 for lam in args.lams):
        p.error('--lams must be >= 0')
    return args


@exits_cleanly
def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    rows = run(args)
    report(rows, args, time.perf_counter() - start)


if __name__ == '__main__':
    main()
