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

The logic is :mod:`mmcondattn.analysis.condition_report`.
"""
import argparse
import os.path as osp
import sys
import warnings

# mmengine imports pkg_resources, which the setuptools that mmcv's build needs flags as deprecated.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
from mmengine.config import DictAction  # noqa: E402

try:
    from mmcondattn.engine.launch import UserError, exits_cleanly
except ImportError as e:  # a broken stack (mmcondattn.stack.StackError): one line
    sys.exit(f'error: {e}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Condition numbers of attention layers per layer (models at init or from '
        'checkpoints) or over training (--logs)')
    p.add_argument('config', nargs='?', help='config file')
    p.add_argument(
        'checkpoints',
        nargs='*',
        metavar='checkpoint',
        help='checkpoints of CONFIG, one model each (none: the initialised model)')
    p.add_argument(
        '--compare',
        nargs='+',
        default=[],
        metavar='CONFIG[=CHECKPOINT]',
        help='more models, each a config at init or config=checkpoint')
    p.add_argument(
        '--logs',
        nargs='+',
        metavar='WORK_DIR',
        help='plot κ over training from the ConditionMonitorHook logs of these runs')
    p.add_argument('--labels', nargs='+', help='one label per model (or per work dir)')
    p.add_argument('--out-dir', default='work_dirs/conditioning', help='where outputs go')
    p.add_argument('--num-images', type=int, default=2, help='probe images (default 2)')
    p.add_argument(
        '--img-size',
        type=int,
        default=224,
        help='side of the generated images when the dataset is absent (default 224)')
    p.add_argument(
        '--seed',
        type=int,
        default=0,
        help='seed of the initialisation and the generated images (default 0)')
    p.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
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


@exits_cleanly
def main(argv=None):
    args = parse_args(argv)
    from mmcondattn.analysis import condition_report as report  # registers the models
    if args.logs:
        for wd in args.logs:
            if not osp.isdir(wd):
                raise UserError(f'work dir not found: {wd}')
        labels = _labels(args, [_stem(wd) for wd in args.logs])
        runs = {lab: report.read_logs(wd) for lab, wd in zip(labels, args.logs)}
        plotted = report.logs_report(runs, args.out_dir)
        print('wrote conditioning_logs.md, conditioning_logs.csv, conditioning_logs.png to '
              f'{args.out_dir}')
        return dict(runs=runs, plotted=plotted)
    out = report.measure_models(
        model_specs(args), args.out_dir, args.num_images, args.img_size, args.seed,
        args.cfg_options)
    for label, src in out['sources'].items():
        print(f'{label}: {src}')
    print(f'wrote conditioning.md, conditioning.csv, conditioning_heads.csv, '
          f'conditioning_layers.png to {args.out_dir}')
    return out


if __name__ == '__main__':
    main()
