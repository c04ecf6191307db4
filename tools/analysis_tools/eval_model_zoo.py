"""Evaluate model-zoo checkpoints and compare them with the metrics their metafiles record.

    python tools/analysis_tools/eval_model_zoo.py --checkpoints DIR [--filter REGEX]
        [--checkpoint NAME=PATH ...] [--model-index model-index.yml] [--tolerance 0.1]
        [--work-dir work_dirs/eval_model_zoo] [--cfg-options KEY=VALUE ...] [--json FILE]

For every model of the model index (``model-index.yml`` and the ``metafile.yml`` files it
imports) that matches ``--filter`` and has a checkpoint -- ``DIR/<Name>.pth``, ``--checkpoint
NAME=PATH``, or its ``Weights`` when that is a local file -- runs ``tools/test.py CONFIG
CHECKPOINT`` in a subprocess (in the current directory), reads the metrics that run logs, and
compares them with the model's ``Results``. Prints a table; exits 1 on a regression or a
failed evaluation, 0 otherwise (2 for wrong arguments).
"""
import argparse
import json
import os.path as osp
import re
import sys

from mmcondattn.analysis.model_zoo import (ZooError, compare, evaluate, find_checkpoint,
                                           load_models, print_table, recorded_metrics)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Evaluate model-zoo checkpoints against the '
                                'metrics recorded in the metafiles')
    p.add_argument(
        '--model-index',
        default=osp.join(REPO, 'model-index.yml'),
        help='model index (default: the repository\'s model-index.yml)')
    p.add_argument(
        '--checkpoints', metavar='DIR', help='folder holding <Name>.pth for the models to evaluate')
    p.add_argument(
        '--checkpoint',
        metavar='NAME=PATH',
        action='append',
        default=[],
        help='checkpoint of one model (repeatable)')
    p.add_argument(
        '--filter',
        metavar='REGEX',
        default=None,
        help='only models whose name or config path matches (re.search)')
    p.add_argument(
        '--tolerance',
        type=float,
        default=0.1,
        help='allowed |measured - recorded|, in the metric\'s unit (AP points, %%)')
    p.add_argument(
        '--work-dir',
        default='work_dirs/eval_model_zoo',
        help='work dir of the evaluations (one folder per model)')
    p.add_argument(
        '--cfg-options',
        nargs='+',
        default=None,
        metavar='KEY=VALUE',
        help='passed to tools/test.py (e.g. a data_root)')
    p.add_argument('--timeout', type=int, default=3600, help='seconds per evaluation')
    p.add_argument('--json', metavar='FILE', help='also write the rows as JSON')
    args = p.parse_args(argv)
    if args.tolerance < 0:
        p.error('--tolerance must be >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        explicit = {}
        for item in args.checkpoint:
            name, sep, path = item.partition('=')
            if not sep or not name or not path:
                raise ZooError(f'--checkpoint expects NAME=PATH, got {item!r}')
            if not osp.isfile(path):
                raise ZooError(f'--checkpoint {name}: {path} not found')
            explicit[name] = path
        if args.checkpoints and not osp.isdir(args.checkpoints):
            raise ZooError(f'--checkpoints: {args.checkpoints} is not a folder')
        if not osp.isfile(args.model_index):
            raise ZooError(f'model index {args.model_index} not found')
        models = load_models(args.model_index)
        unknown = sorted(set(explicit) - {m['Name'] for m in models})
        if unknown:
            raise ZooError(f'--checkpoint names models not in the index: {unknown}')
        pattern = re.compile(args.filter) if args.filter else None
        selected = [
            m for m in models if pattern is None or pattern.search(m['Name'])
            or pattern.search(osp.relpath(m['Config'], REPO))
        ]
        recorded = {m['Name']: recorded_metrics(m) for m in selected}
    except (ZooError, re.error) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2

    rows, skipped = [], []
    for m in selected:
        ckpt = find_checkpoint(m, args.checkpoints, explicit)
        if ckpt is None:
            skipped.append(m['Name'])
            continue
        print(f"evaluating {m['Name']} ({ckpt}) ...", flush=True)
        metrics, error = evaluate(m, ckpt, args.work_dir, args.cfg_options, args.timeout, REPO)
        if error:
            rows.append(
                dict(
                    model=m['Name'],
                    metric=', '.join(recorded[m['Name']]) or '-',
                    recorded=None,
                    measured=None,
                    status='error',
                    error=error))
            continue
        for metric, rec, measured, status in compare(recorded[m['Name']], metrics, args.tolerance):
            rows.append(
                dict(
                    model=m['Name'],
                    metric=metric,
                    recorded=rec,
                    measured=measured,
                    status=status,
                    checkpoint=ckpt))
        if not rows or rows[-1]['model'] != m['Name']:
            rows.append(
                dict(
                    model=m['Name'],
                    metric='-',
                    recorded=None,
                    measured=None,
                    status='error',
                    error='no known metric in the evaluation log'))

    print_table(rows, skipped)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(rows=rows, skipped=skipped, tolerance=args.tolerance), f, indent=1)
    bad = [r for r in rows if r['status'] in ('REGRESSION', 'error')]
    if not rows:
        print('no model evaluated (no checkpoint found for the selected models)')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
