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
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# metafile metric name -> (metric key logged by the evaluator, factor to the metafile's unit)
METRICS = {
    'box AP': ('coco/bbox_mAP', 100.0),
    'mask AP': ('coco/segm_mAP', 100.0),
    'Top 1 Accuracy': ('accuracy/top1', 1.0),
    'Top 5 Accuracy': ('accuracy/top5', 1.0),
}


class ZooError(Exception):
    """A malformed model index or metafile, or a wrong argument."""


def _yaml(path):
    import yaml
    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ZooError(f'cannot read {path}: {e}') from None


def load_models(model_index):
    """Models of ``model_index`` (and the metafiles it imports), each a dict with ``Name``,
    ``Config`` (absolute path), ``Results`` (list), ``Weights``, ``metafile``.

    Relative ``Import`` and ``Config`` paths are relative to the model index's folder (the
    repository root for the repository's ``model-index.yml``).
    """
    root = osp.dirname(osp.abspath(model_index))
    index = _yaml(model_index)
    files = [model_index] if 'Models' in index else []
    files += [p if osp.isabs(p) else osp.join(root, p) for p in index.get('Import') or []]
    models, seen = [], {}
    for path in files:
        meta = index if path == model_index else _yaml(path)
        for m in meta.get('Models') or []:
            if 'Name' not in m or 'Config' not in m:
                raise ZooError(f'{path}: a model without Name or Config: {m}')
            if m['Name'] in seen:
                raise ZooError(f"{path}: model {m['Name']} is also in {seen[m['Name']]}")
            seen[m['Name']] = path
            cfg = m['Config'] if osp.isabs(m['Config']) else osp.join(root, m['Config'])
            weights = m.get('Weights')
            if weights and not re.match(r'^[a-z]+://', weights) and not osp.isabs(weights):
                weights = osp.join(root, weights)
            models.append(dict(Name=m['Name'], Config=cfg, Results=m.get('Results') or [],
                               Weights=weights, metafile=path))
    return models


def recorded_metrics(model):
    """{metric name: value} of a model's Results (all tasks)."""
    out = {}
    for res in model['Results']:
        for name, value in (res.get('Metrics') or {}).items():
            if name not in METRICS:
                raise ZooError(f"{model['metafile']}: {model['Name']}: unknown metric "
                               f"{name!r}; known: {', '.join(METRICS)}")
            out[name] = float(value)
    return out


def find_checkpoint(model, ckpt_dir, explicit):
    """The checkpoint path for ``model``, or None."""
    if model['Name'] in explicit:
        return explicit[model['Name']]
    if ckpt_dir:
        path = osp.join(ckpt_dir, model['Name'] + '.pth')
        if osp.isfile(path):
            return path
    w = model['Weights']
    if w and not re.match(r'^[a-z]+://', w) and osp.isfile(w):
        return w
    return None


def _logged_metrics(work_dir, since):
    """The metrics dict of the newest ``<timestamp>.json`` written under ``work_dir`` by
    ``runner.test()`` after ``since`` (mmengine's LoggerHook writes it into the log dir)."""
    found = []
    for path in glob.glob(osp.join(work_dir, '*', '*.json')):
        if osp.getmtime(path) >= since and osp.basename(osp.dirname(path)) + '.json' == \
                osp.basename(path):
            found.append(path)
    if not found:
        return None
    with open(max(found, key=osp.getmtime)) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:  # one JSON object per line
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else None


def evaluate(model, checkpoint, work_dir, cfg_options, timeout):
    """Run tools/test.py; return (metrics dict or None, error text or None)."""
    wd = osp.join(work_dir, model['Name'])
    cmd = [sys.executable, osp.join(REPO, 'tools/test.py'), model['Config'], checkpoint,
           '--work-dir', wd]
    if cfg_options:
        cmd += ['--cfg-options'] + cfg_options
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    start = time.time() - 1
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f'tools/test.py ran past {timeout} s'
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ['']
        return None, f'tools/test.py exited {r.returncode}: {tail[0][:300]}'
    metrics = _logged_metrics(wd, start)
    if metrics is None:
        return None, f'tools/test.py wrote no metrics json under {wd}'
    return metrics, None


def compare(recorded, metrics, tolerance):
    """Rows (metric, recorded, measured, status) for one model."""
    rows = []
    names = list(recorded) or [n for n, (key, _) in METRICS.items() if key in metrics]
    for name in names:
        key, factor = METRICS[name]
        rec = recorded.get(name)
        if key not in metrics:
            rows.append((name, rec, None, 'error'))
            continue
        measured = round(float(metrics[key]) * factor, 4)
        if rec is None:
            status = 'measured'
        elif measured < rec - tolerance:
            status = 'REGRESSION'
        elif measured > rec + tolerance:
            status = 'better'
        else:
            status = 'match'
        rows.append((name, rec, measured, status))
    return rows


def _fmt(v):
    return '-' if v is None else f'{v:.2f}'


def print_table(rows, skipped):
    head = ('model', 'metric', 'recorded', 'measured', 'diff', 'status')
    body = [(r['model'], r['metric'], _fmt(r['recorded']), _fmt(r['measured']),
             _fmt(None if r['recorded'] is None or r['measured'] is None
                  else r['measured'] - r['recorded']), r['status']) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'  # noqa
    print(line(head))
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for b in body:
        print(line(b))
    for r in rows:
        if r.get('error'):
            print(f"{r['model']}: {r['error']}")
    if skipped:
        print(f'skipped (no checkpoint): {len(skipped)} models'
              + (f" ({', '.join(skipped[:8])}{', ...' if len(skipped) > 8 else ''})"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Evaluate model-zoo checkpoints against the '
                                'metrics recorded in the metafiles')
    p.add_argument('--model-index', default=osp.join(REPO, 'model-index.yml'),
                   help='model index (default: the repository\'s model-index.yml)')
    p.add_argument('--checkpoints', metavar='DIR',
                   help='folder holding <Name>.pth for the models to evaluate')
    p.add_argument('--checkpoint', metavar='NAME=PATH', action='append', default=[],
                   help='checkpoint of one model (repeatable)')
    p.add_argument('--filter', metavar='REGEX', default=None,
                   help='only models whose name or config path matches (re.search)')
    p.add_argument('--tolerance', type=float, default=0.1,
                   help='allowed |measured - recorded|, in the metric\'s unit (AP points, %%)')
    p.add_argument('--work-dir', default='work_dirs/eval_model_zoo',
                   help='work dir of the evaluations (one folder per model)')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
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
        selected = [m for m in models if pattern is None or pattern.search(m['Name'])
                    or pattern.search(osp.relpath(m['Config'], REPO))]
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
        metrics, error = evaluate(m, ckpt, args.work_dir, args.cfg_options, args.timeout)
        if error:
            rows.append(dict(model=m['Name'], metric=', '.join(recorded[m['Name']]) or '-',
                             recorded=None, measured=None, status='error', error=error))
            continue
        for metric, rec, measured, status in compare(recorded[m['Name']], metrics,
                                                     args.tolerance):
            rows.append(dict(model=m['Name'], metric=metric, recorded=rec,
                             measured=measured, status=status, checkpoint=ckpt))
        if not rows or rows[-1]['model'] != m['Name']:
            rows.append(dict(model=m['Name'], metric='-', recorded=None, measured=None,
                             status='error', error='no known metric in the evaluation log'))

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
