"""Model-zoo evaluation: the models of a model index (``model-index.yml`` and the metafiles
it imports), their checkpoints, ``tools/test.py`` runs and the comparison of what they log
with the metrics the metafiles record (``match`` / ``better`` / ``REGRESSION``).

The command line is ``tools/analysis_tools/eval_model_zoo.py`` (docs/tools.md).
"""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

from .. import openmmlab  # noqa: F401  the registries its models are built from

__all__ = [
    'METRICS', 'ZooError', 'load_models', 'recorded_metrics', 'find_checkpoint', 'evaluate',
    'compare', 'print_table'
]

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
            models.append(
                dict(
                    Name=m['Name'],
                    Config=cfg,
                    Results=m.get('Results') or [],
                    Weights=weights,
                    metafile=path))
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


def evaluate(model, checkpoint, work_dir, cfg_options, timeout, repo):
    """Run ``repo``'s tools/test.py; return (metrics dict or None, error text or None)."""
    wd = osp.join(work_dir, model['Name'])
    cmd = [
        sys.executable,
        osp.join(repo, 'tools/test.py'), model['Config'], checkpoint, '--work-dir', wd
    ]
    if cfg_options:
        cmd += ['--cfg-options'] + cfg_options
    env = dict(os.environ)
    env['PYTHONPATH'] = repo + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
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
             _fmt(None if r['recorded'] is None or r['measured'] is None else r['measured'] -
                  r['recorded']), r['status']) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def line(cells):
        return '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'

    print(line(head))
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for b in body:
        print(line(b))
    for r in rows:
        if r.get('error'):
            print(f"{r['model']}: {r['error']}")
    if skipped:
        print(f'skipped (no checkpoint): {len(skipped)} models' +
              (f" ({', '.join(skipped[:8])}{', ...' if len(skipped) > 8 else ''})"))
