"""Condition numbers of the attention layers of one or more models, per layer, and over
training from the logs of ``ConditionMonitorHook``.

Per layer, models at init (no checkpoint) or from checkpoints::

    python tools/analysis_tools/conditioning.py CONFIG [CHECKPOINT ...] \\
        [--compare CONFIG[=CHECKPOINT] ...] [--labels L ...] [--out-dir DIR] \\
        [--num-images 2] [--img-size 224] [--cfg-options KEY=VALUE ...]

measures CONFIG once per CHECKPOINT (once at init without one), then every ``--compare``
model (e.g. the baseline first, then its conditioned twins), on the first ``--num-images``
images of the config's test dataset through its test pipeline when the data is there,
else on generated shape images of ``--img-size`` pixels. Writes ``DIR/conditioning.md``
(summary and per-layer tables), ``conditioning.csv`` (a row per model and layer, and one
for the embedded tokens), ``conditioning_heads.csv`` and ``conditioning_layers.png``.

Over training, runs trained with the hook::

    python tools/analysis_tools/conditioning.py --logs WORK_DIR [WORK_DIR ...] [--labels L ...]

reads ``WORK_DIR/*/vis_data/scalars.json`` and writes ``DIR/conditioning_logs.md``,
``conditioning_logs.csv`` and ``conditioning_logs.png`` (κ over iterations, one line per run).
"""
import argparse
import csv
import glob
import json
import os
import os.path as osp
import sys
import tempfile
import warnings

# mmengine imports pkg_resources, which the setuptools that mmcv's build needs flags as deprecated.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
from mmengine.config import DictAction  # noqa: E402

try:
    from mmcondattn.engine.launch import UserError, check_data, exits_cleanly, load_config
except ImportError as e:  # a broken stack (mmcondattn.stack.StackError): one line
    sys.exit(f'error: {e}')

# (key, axis label) of the per-layer figure, κ on a log scale, entropy linear
PLOT_KEYS = (('kappa_attn', 'κ(A)'), ('kappa_out', 'κ(O)'), ('kappa_out_proj', 'κ(O into proj)'),
             ('kappa_x', 'κ(X)'), ('kappa_wq', 'κ(W_Q)'), ('kappa_wk', 'κ(W_K)'),
             ('kappa_wv', 'κ(W_V)'), ('entropy_attn', 'attention entropy (nats)'))
# (hook key, axis label) of the over-training figure
LOG_KEYS = (('cond/kappa_attn_mean', 'κ(A), layer mean'),
            ('cond/kappa_attn_max', 'κ(A), layer max'),
            ('cond/kappa_out_proj_mean', 'κ(O into proj), layer mean'),
            ('cond/kappa_x_mean', 'κ(X), layer mean'),
            ('cond/kappa_tokens', 'κ(embedded tokens)'),
            ('cond/kappa_wq_mean', 'κ(W_Q), layer mean'),
            ('cond/kappa_wv_mean', 'κ(W_V), layer mean'),
            ('cond/entropy_attn_mean', 'attention entropy, layer mean'))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Condition numbers of attention layers per layer (models at init or from '
        'checkpoints) or over training (--logs)')
    p.add_argument('config', nargs='?', help='config file')
    p.add_argument('checkpoints', nargs='*', metavar='checkpoint',
                   help='checkpoints of CONFIG, one model each (none: the initialised model)')
    p.add_argument('--compare', nargs='+', default=[], metavar='CONFIG[=CHECKPOINT]',
                   help='more models, each a config at init or config=checkpoint')
    p.add_argument('--logs', nargs='+', metavar='WORK_DIR',
                   help='plot κ over training from the ConditionMonitorHook logs of these runs')
    p.add_argument('--labels', nargs='+', help='one label per model (or per work dir)')
    p.add_argument('--out-dir', default='work_dirs/conditioning', help='where outputs go')
    p.add_argument('--num-images', type=int, default=2, help='probe images (default 2)')
    p.add_argument('--img-size', type=int, default=224,
                   help='side of the generated images when the dataset is absent (default 224)')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the initialisation and the generated images (default 0)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings in every config, key=value')
    args = p.parse_args(argv)
    if args.logs and (args.config or args.compare):
        p.error('--logs takes work dirs only, not configs')
    if not args.logs and not args.config:
        p.error('give a CONFIG (per-layer mode) or --logs WORK_DIR ... (over training)')
    if args.num_images < 1 or args.img_size < 8:
        p.error('--num-images must be >= 1 and --img-size >= 8')
    return args


def _stem(path):
    return osp.splitext(osp.basename(path.rstrip('/')))[0]


def _labels(args, defaults):
    if args.labels is None:
        return defaults
    if len(args.labels) != len(defaults):
        raise UserError(f'--labels gives {len(args.labels)} labels for {len(defaults)} '
                        f'{"runs" if args.logs else "models"} ({", ".join(defaults)})')
    return list(args.labels)


def model_specs(args):
    """``[(label, config, checkpoint or None)]`` in the order of the command line."""
    specs = [(args.config, c) for c in args.checkpoints] or [(args.config, None)]
    for item in args.compare:
        cfg, _, ckpt = item.partition('=')
        specs.append((cfg, ckpt or None))
    defaults = [_stem(c) + (f'@{_stem(k)}' if k else '') for c, k in specs]
    if len(set(defaults)) < len(defaults) and args.labels is None:
        defaults = [f'{i}:{d}' for i, d in enumerate(defaults)]
    return [(lab, c, k) for lab, (c, k) in zip(_labels(args, defaults), specs)]


def _keys_line(keys, n=4):
    keys = sorted(keys)
    return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def load_weights(model, checkpoint, config):
    """Load ``checkpoint`` (weights_only) into ``model``; any key mismatch is a UserError."""
    from mmcondattn.compat import load_checkpoint_file
    ckpt = load_checkpoint_file(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserError(f'checkpoint {checkpoint} holds no state dict')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        why = ' '.join(str(e).split('\n\t')[1:2]) or str(e).splitlines()[0]
        raise UserError(f'checkpoint {checkpoint} does not fit config {config}: {why}') from None
    if missing or unexpected:
        parts = [f'{len(missing)} missing keys ({_keys_line(missing)})' if missing else '',
                 f'{len(unexpected)} unexpected keys ({_keys_line(unexpected)})'
                 if unexpected else '']
        raise UserError(f'checkpoint {checkpoint} does not match config {config}: '
                        + '; '.join(p for p in parts if p))


def build_model(config, checkpoint, args):
    """The model of ``config`` (initialised with ``--seed``, or loaded from ``checkpoint``)
    and its parsed config."""
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import set_random_seed
    cfg = load_config(config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    set_random_seed(args.seed)
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_weights(model, checkpoint, config)
    else:
        try:
            model.init_weights()
        except (OSError, RuntimeError, ValueError) as e:  # e.g. a Pretrained init_cfg offline
            raise UserError(
                f'{config}: initialising the model failed ({type(e).__name__}: '
                f'{str(e).splitlines()[0]}); give a checkpoint, or drop a pretrained init '
                f'with --cfg-options model.backbone.init_cfg=None') from None
    return model.eval(), cfg


def _generated_images(num, size, seed):
    """``num`` shape images (3, size, size) uint8 BGR from the package's data generator."""
    import cv2
    import torch
    from mmcondattn.datasets import make_imagenet_folder
    per_class = -(-num // 3)
    with tempfile.TemporaryDirectory() as tmp:
        make_imagenet_folder(tmp, num_train_per_class=0, num_val_per_class=per_class,
                             img_size=size, seed=seed)
        paths = sorted(glob.glob(osp.join(tmp, 'val', '*', '*.png')))
        paths = [paths[i * per_class + j] for j in range(per_class) for i in range(3)][:num]
        return [torch.from_numpy(cv2.imread(p)).permute(2, 0, 1).contiguous() for p in paths]


def probe_inputs(model, cfg, args):
    """Preprocessed probe images (B, 3, H, W) and a line saying where they come from."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS
    loader = 'test_dataloader' if cfg.get('test_dataloader') else 'val_dataloader'
    try:
        ds_cfg = cfg[loader]['dataset']
        check_data(cfg, (loader, ))
        dataset = DATASETS.build(ds_cfg)
    except (UserError, KeyError, TypeError):
        dataset = None
    if dataset is not None and len(dataset) >= args.num_images:
        batch = pseudo_collate([dataset[i] for i in range(args.num_images)])
        inputs, source = batch['inputs'], f'{args.num_images} images of the {loader} dataset'
    else:
        inputs = _generated_images(args.num_images, args.img_size, args.seed)
        source = f'{args.num_images} generated {args.img_size}px shape images'
    with torch.no_grad():
        return model.data_preprocessor(dict(inputs=inputs), False)['inputs'], source


# ------------------------------------------------------------------ outputs, per-layer mode

def _fmt(v):
    return f'{v:.3g}' if isinstance(v, float) else str(v)


def write_tables(results, out_dir):
    """conditioning.csv (per layer + tokens), conditioning_heads.csv, conditioning.md."""
    from mmcondattn.models.probe import HEAD_KEYS, LAYER_KEYS, summarize
    fields = ['model', 'layer', 'name', *LAYER_KEYS]
    with open(osp.join(out_dir, 'conditioning.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fields, restval='')
        w.writeheader()
        for label, res in results.items():
            for row in res['layers']:
                w.writerow(dict(model=label, layer=row['index'], name=row['name'],
                                **{k: row[k] for k in LAYER_KEYS}))
            if res['tokens']:
                w.writerow(dict(model=label, layer='tokens', name='embedded patch tokens',
                                kappa_x=res['tokens']['kappa'],
                                sigma_min_x=res['tokens']['sigma_min']))
    with open(osp.join(out_dir, 'conditioning_heads.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['model', 'layer', 'head', *HEAD_KEYS])
        for label, res in results.items():
            for row in res['layers']:
                for h, vals in enumerate(zip(*(row[f'{k}_heads'] for k in HEAD_KEYS))):
                    w.writerow([label, row['index'], h, *vals])

    cols = [('kappa_attn_mean', 'κ(A)'), ('kappa_out_mean', 'κ(O)'),
            ('kappa_out_proj_mean', 'κ(O→proj)'), ('kappa_x_mean', 'κ(X)'),
            ('kappa_tokens', 'κ(tokens)'), ('kappa_wq_mean', 'κ(W_Q)'),
            ('kappa_wk_mean', 'κ(W_K)'), ('kappa_wv_mean', 'κ(W_V)'),
            ('entropy_attn_mean', 'entropy')]
    sums = {label: summarize(res) for label, res in results.items()}
    base = next(iter(sums.values()))
    lines = ['# Conditioning per layer', '',
             'Layer means (means over images / windows and heads inside a layer); in brackets '
             f'the ratio to the first model ({next(iter(sums))}).', '',
             '| model | ' + ' | '.join(c for _, c in cols) + ' |',
             '|---' * (len(cols) + 1) + '|']
    for label, s in sums.items():
        cells = []
        for key, _ in cols:
            if key not in s:
                cells.append('-')
            elif key in base and base[key] and label != next(iter(sums)):
                cells.append(f'{s[key]:.3g} (×{s[key] / base[key]:.2g})')
            else:
                cells.append(f'{s[key]:.3g}')
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    for key, title in PLOT_KEYS:
        lines += ['', f'## {title} per layer', '',
                  '| layer | ' + ' | '.join(results) + ' |', '|---' * (len(results) + 1) + '|']
        depth = max(len(r['layers']) for r in results.values())
        for i in range(depth):
            cells = [_fmt(r['layers'][i][key]) if i < len(r['layers']) else '-'
                     for r in results.values()]
            lines.append(f'| {i} | ' + ' | '.join(cells) + ' |')
    with open(osp.join(out_dir, 'conditioning.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def plot_layers(results, path):
    """Grouped bars per layer, models side by side, one panel per key of PLOT_KEYS.

    Returns ``{key: {model: [bar heights]}}`` read back from the drawn bars."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    n = len(results)
    fig, axes = plt.subplots(2, (len(PLOT_KEYS) + 1) // 2, figsize=(22, 8.5), squeeze=False)
    plotted = {}
    width = 0.8 / n
    for ax, (key, title) in zip(axes.flat, PLOT_KEYS):
        plotted[key] = {}
        for j, (label, res) in enumerate(results.items()):
            vals = [row[key] for row in res['layers']]
            x = np.arange(len(vals)) + (j - (n - 1) / 2) * width
            bars = ax.bar(x, vals, width, label=label)
            plotted[key][label] = [b.get_height() for b in bars]
        if key.startswith('kappa'):
            ax.set_yscale('log')
        ax.set_xticks(range(max(len(r['layers']) for r in results.values())))
        ax.set_title(title)
        ax.set_xlabel('layer')
        ax.grid(axis='y', alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(PLOT_KEYS):]:
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return plotted


def run_layers(args):
    from mmengine.utils import track_iter_progress

    from mmcondattn.models.probe import measure_conditioning
    specs = model_specs(args)
    os.makedirs(args.out_dir, exist_ok=True)
    results, sources = {}, {}
    for label, config, ckpt in track_iter_progress(specs):
        model, cfg = build_model(config, ckpt, args)
        inputs, sources[label] = probe_inputs(model, cfg, args)
        try:
            results[label] = measure_conditioning(model, inputs)
        except ValueError as e:  # no attention layer
            raise UserError(f'{config}: {e}') from None
    write_tables(results, args.out_dir)
    plotted = plot_layers(results, osp.join(args.out_dir, 'conditioning_layers.png'))
    for label, src in sources.items():
        print(f'{label}: {src}')
    print(f'wrote conditioning.md, conditioning.csv, conditioning_heads.csv, '
          f'conditioning_layers.png to {args.out_dir}')
    return dict(results=results, plotted=plotted, sources=sources)


# ------------------------------------------------------------------ over-training mode

def read_logs(work_dir):
    """``{key: [(step, value), ...]}`` of every ``cond/*`` key the hook logged in
    ``work_dir/*/vis_data/scalars.json`` (all runs there, later runs win at equal steps)."""
    from mmcondattn.engine.logs import read_scalars, scalars_files
    series = read_scalars(work_dir, lambda key: key.startswith('cond/'))
    if not series:
        raise UserError(
            f'no ConditionMonitorHook records in {work_dir}/*/vis_data/scalars.json '
            f'({len(scalars_files(work_dir))} log files); train with custom_hooks=[dict(type='
            "'ConditionMonitorHook', interval=50)]")
    return {k: sorted(v.items()) for k, v in series.items()}


def run_logs(args):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    for wd in args.logs:
        if not osp.isdir(wd):
            raise UserError(f'work dir not found: {wd}')
    labels = _labels(args, [_stem(wd) for wd in args.logs])
    runs = {lab: read_logs(wd) for lab, wd in zip(labels, args.logs)}
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'conditioning_logs.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['run', 'key', 'step', 'value'])
        for lab, series in runs.items():
            for key, points in series.items():
                w.writerows([lab, key, s, v] for s, v in points)
    keys = [(k, t) for k, t in LOG_KEYS if any(k in s for s in runs.values())]
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(5 * ((len(keys) + 1) // 2), 8),
                             squeeze=False)
    plotted = {}
    for ax, (key, title) in zip(axes.flat, keys):
        plotted[key] = {}
        for lab, series in runs.items():
            if key in series:
                steps, vals = zip(*series[key])
                line, = ax.plot(steps, vals, marker='o', ms=3, label=lab)
                plotted[key][lab] = (list(line.get_xdata()), list(line.get_ydata()))
        if 'kappa' in key:
            ax.set_yscale('log')
        ax.set_title(title)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(osp.join(args.out_dir, 'conditioning_logs.png'), dpi=80)
    plt.close(fig)
    lines = ['# Conditioning over training', '', 'First → last logged value (step in brackets).',
             '', '| run | ' + ' | '.join(t for _, t in keys) + ' |', '|---' * (len(keys) + 1) + '|']
    for lab, series in runs.items():
        cells = [f'{series[k][0][1]:.3g} → {series[k][-1][1]:.3g} ({series[k][-1][0]})'
                 if k in series else '-' for k, _ in keys]
        lines.append(f'| {lab} | ' + ' | '.join(cells) + ' |')
    with open(osp.join(args.out_dir, 'conditioning_logs.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print(f'wrote conditioning_logs.md, conditioning_logs.csv, conditioning_logs.png to '
          f'{args.out_dir}')
    return dict(runs=runs, plotted=plotted)


@exits_cleanly
def main(argv=None):
    args = parse_args(argv)
    import mmcondattn  # noqa: F401  registers modules, applies the stack shims
    return run_logs(args) if args.logs else run_layers(args)


if __name__ == '__main__':
    main()
