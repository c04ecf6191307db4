"""Condition numbers of the attention layers of models, per layer (at init or from
checkpoints, on probe images) and over training (from ``ConditionMonitorHook``'s logs): the
tables, CSV files and plots of ``tools/analysis_tools/conditioning.py``.

Per layer (:func:`measure_models`), written to ``out_dir``: ``conditioning.md`` (summary and
per-layer tables), ``conditioning.csv`` (a row per model and layer, and one for the embedded
tokens), ``conditioning_heads.csv`` and ``conditioning_layers.png``. Over training
(:func:`logs_report`): ``conditioning_logs.md``, ``conditioning_logs.csv`` and
``conditioning_logs.png`` (κ over iterations, one line per run).
"""
import csv
import glob
import os
import os.path as osp
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from .. import openmmlab  # noqa: F401  the registries its models are built from
from ..converters.common import ConversionError, unwrap_state_dict
from ..engine.launch import UserError, check_data, load_config
from .logs import read_scalars, scalars_files
from .report import pyplot, save_figure

__all__ = [
    'PLOT_KEYS', 'LOG_KEYS', 'build_model', 'probe_inputs', 'measure_models', 'write_tables',
    'plot_layers', 'read_logs', 'logs_report'
]

# (key, axis label) of the per-layer figure, κ on a log scale, entropy linear
PLOT_KEYS = (('kappa_attn', 'κ(A)'), ('kappa_out', 'κ(O)'), ('kappa_out_proj', 'κ(O into proj)'),
             ('kappa_x', 'κ(X)'), ('kappa_wq', 'κ(W_Q)'), ('kappa_wk', 'κ(W_K)'),
             ('kappa_wv', 'κ(W_V)'), ('entropy_attn', 'attention entropy (nats)'))
# (hook key, axis label) of the over-training figure
LOG_KEYS = (('cond/kappa_attn_mean', 'κ(A), layer mean'),
            ('cond/kappa_attn_max', 'κ(A), layer max'), ('cond/kappa_out_proj_mean',
                                                         'κ(O into proj), layer mean'),
            ('cond/kappa_x_mean', 'κ(X), layer mean'), ('cond/kappa_tokens', 'κ(embedded tokens)'),
            ('cond/kappa_wq_mean', 'κ(W_Q), layer mean'),
            ('cond/kappa_wv_mean', 'κ(W_V), layer mean'), ('cond/entropy_attn_mean',
                                                           'attention entropy, layer mean'))


def _keys_line(keys, n=4):
    keys = sorted(keys)
    return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def load_weights(model, checkpoint: str, config: str) -> None:
    """Load ``checkpoint`` (weights_only) into ``model``; any key mismatch is a UserError."""
    from ..compat import load_checkpoint_file
    try:
        state = unwrap_state_dict(load_checkpoint_file(checkpoint, map_location='cpu'))
    except ConversionError as e:
        raise UserError(f'checkpoint {checkpoint} holds no state dict ({e})') from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        why = ' '.join(str(e).split('\n\t')[1:2]) or str(e).splitlines()[0]
        raise UserError(f'checkpoint {checkpoint} does not fit config {config}: {why}') from None
    # svd corrections missing from a checkpoint trained without them are computed from the
    # loaded weights; what conditioning the weights were trained with is compared by the model
    missing = [k for k in missing if not k.endswith('.qkv.correction')]
    if missing or unexpected:
        parts = [
            f'{len(missing)} missing keys ({_keys_line(missing)})' if missing else '',
            f'{len(unexpected)} unexpected keys ({_keys_line(unexpected)})' if unexpected else ''
        ]
        raise UserError(f'checkpoint {checkpoint} does not match config {config}: ' +
                        '; '.join(p for p in parts if p))


def build_model(config: str,
                checkpoint: Optional[str] = None,
                cfg_options: Optional[dict] = None,
                seed: int = 0):
    """``(model in eval mode, parsed config)`` of ``config`` (``cfg_options`` merged in),
    initialised from ``seed`` or loaded from ``checkpoint``."""
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import set_random_seed
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    set_random_seed(seed)
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

    from ..datasets import make_imagenet_folder
    per_class = -(-num // 3)
    with tempfile.TemporaryDirectory() as tmp:
        make_imagenet_folder(
            tmp, num_train_per_class=0, num_val_per_class=per_class, img_size=size, seed=seed)
        paths = sorted(glob.glob(osp.join(tmp, 'val', '*', '*.png')))
        paths = [paths[i * per_class + j] for j in range(per_class) for i in range(3)][:num]
        return [torch.from_numpy(cv2.imread(p)).permute(2, 0, 1).contiguous() for p in paths]


def probe_inputs(model, cfg, num_images: int = 2, img_size: int = 224, seed: int = 0):
    """Preprocessed probe images (B, 3, H, W) and a line saying where they come from: the
    first ``num_images`` of the config's test (else val) dataset through its pipeline when
    the data is there, else generated shape images of ``img_size`` px (``seed``)."""
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
    if dataset is not None and len(dataset) >= num_images:
        batch = pseudo_collate([dataset[i] for i in range(num_images)])
        inputs, source = batch['inputs'], f'{num_images} images of the {loader} dataset'
    else:
        inputs = _generated_images(num_images, img_size, seed)
        source = f'{num_images} generated {img_size}px shape images'
    with torch.no_grad():
        return model.data_preprocessor(dict(inputs=inputs), False)['inputs'], source


# ------------------------------------------------------------------ outputs, per-layer mode


def _fmt(v):
    return f'{v:.3g}' if isinstance(v, float) else str(v)


def loads_section(loads) -> list:
    """Markdown lines: per model, what its loaded weights were trained with against what it
    applies, and the measured output change (``conditioning_state.last_load``)."""
    rows = [(label, name, r) for label, found in loads.items() for name, r in found]
    if not rows:
        return []
    lines = [
        '', '## Loaded weights against the model\'s conditioning', '',
        'Relative change of the output on a probe batch (2 fixed random images) between the '
        'model as loaded and the function the weights were trained to compute.', '',
        '| model | module | weights trained | model applies | output change |',
        '|---|---|---|---|---|'
    ]
    for label, name, r in rows:
        change = '–' if r['drift'] is None else f"{100 * r['drift']:.1f} %"
        lines.append(f"| {label} | {name or '(model)'} | {r['trained']} | {r['applies']} | "
                     f'{change} |')
    return lines


def last_loads(model) -> list:
    """[(module name, its ``conditioning_state.last_load``)] of the conditioned parts."""
    from ..conditioning.state import ConditioningState
    return [(name.rsplit('.', 1)[0] if '.' in name else '', m.last_load)
            for name, m in model.named_modules()
            if isinstance(m, ConditioningState) and m.last_load is not None]


def write_tables(results, out_dir, loads=None):
    """conditioning.csv (per layer + tokens), conditioning_heads.csv, conditioning.md (with
    :func:`loads_section` of ``loads``: ``{label: last_loads(model)}``)."""
    from ..models.probe import HEAD_KEYS, LAYER_KEYS, summarize
    fields = ['model', 'layer', 'name', *LAYER_KEYS]
    with open(osp.join(out_dir, 'conditioning.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fields, restval='')
        w.writeheader()
        for label, res in results.items():
            for row in res['layers']:
                w.writerow(
                    dict(
                        model=label,
                        layer=row['index'],
                        name=row['name'],
                        **{k: row[k]
                           for k in LAYER_KEYS}))
            if res['tokens']:
                w.writerow(
                    dict(
                        model=label,
                        layer='tokens',
                        name='embedded patch tokens',
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
            ('kappa_tokens', 'κ(tokens)'), ('kappa_wq_mean', 'κ(W_Q)'), ('kappa_wk_mean', 'κ(W_K)'),
            ('kappa_wv_mean', 'κ(W_V)'), ('entropy_attn_mean', 'entropy')]
    sums = {label: summarize(res) for label, res in results.items()}
    base = next(iter(sums.values()))
    lines = [
        '# Conditioning per layer', '',
        'Layer means (means over images / windows and heads inside a layer); in brackets '
        f'the ratio to the first model ({next(iter(sums))}).', '',
        '| model | ' + ' | '.join(c for _, c in cols) + ' |', '|---' * (len(cols) + 1) + '|'
    ]
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
        lines += [
            '', f'## {title} per layer', '', '| layer | ' + ' | '.join(results) + ' |',
            '|---' * (len(results) + 1) + '|'
        ]
        depth = max(len(r['layers']) for r in results.values())
        for i in range(depth):
            cells = [
                _fmt(r['layers'][i][key]) if i < len(r['layers']) else '-'
                for r in results.values()
            ]
            lines.append(f'| {i} | ' + ' | '.join(cells) + ' |')
    lines += loads_section(loads or {})
    with open(osp.join(out_dir, 'conditioning.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def plot_layers(results, path):
    """Grouped bars per layer, models side by side, one panel per key of PLOT_KEYS.

    Returns ``{key: {model: [bar heights]}}`` read back from the drawn bars."""
    import numpy as np
    plt = pyplot()
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
    save_figure(fig, path, dpi=80)
    return plotted


def measure_models(specs: Sequence[Tuple[str, str, Optional[str]]],
                   out_dir: str,
                   num_images: int = 2,
                   img_size: int = 224,
                   seed: int = 0,
                   cfg_options: Optional[dict] = None) -> dict:
    """Measure every ``(label, config, checkpoint or None)`` (:func:`build_model`,
    :func:`probe_inputs`, :func:`~mmcondattn.models.probe.measure_conditioning`), write the
    tables and the figure to ``out_dir``. Returns ``results`` and ``sources`` per label and
    the ``plotted`` bar heights (:func:`plot_layers`)."""
    from mmengine.utils import track_iter_progress

    from ..models.probe import measure_conditioning
    os.makedirs(out_dir, exist_ok=True)
    results, sources, loads = {}, {}, {}
    for label, config, ckpt in track_iter_progress(list(specs)):
        model, cfg = build_model(config, ckpt, cfg_options, seed)
        loads[label] = last_loads(model)
        inputs, sources[label] = probe_inputs(model, cfg, num_images, img_size, seed)
        try:
            results[label] = measure_conditioning(model, inputs)
        except ValueError as e:  # no attention layer
            raise UserError(f'{config}: {e}') from None
    write_tables(results, out_dir, loads)
    plotted = plot_layers(results, osp.join(out_dir, 'conditioning_layers.png'))
    return dict(results=results, plotted=plotted, sources=sources, loads=loads)


# ------------------------------------------------------------------ over-training mode


def read_logs(work_dir: str) -> Dict[str, List[Tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` of every ``cond/*`` key the hook logged in
    ``work_dir/*/vis_data/scalars.json`` (all runs there, later runs win at equal steps)."""
    series = read_scalars(work_dir, lambda key: key.startswith('cond/'))
    if not series:
        raise UserError(
            f'no ConditionMonitorHook records in {work_dir}/*/vis_data/scalars.json '
            f'({len(scalars_files(work_dir))} log files); train with custom_hooks=[dict(type='
            "'ConditionMonitorHook', interval=50)]")
    return {k: sorted(v.items()) for k, v in series.items()}


def logs_report(runs: Dict[str, Dict[str, List[Tuple[int, float]]]], out_dir: str) -> dict:
    """conditioning_logs.csv, .png and .md of ``{run label: read_logs(work dir)}``; returns
    ``{key: {run: (steps, values)}}`` read back from the drawn lines."""
    plt = pyplot()
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'conditioning_logs.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['run', 'key', 'step', 'value'])
        for lab, series in runs.items():
            for key, points in series.items():
                w.writerows([lab, key, s, v] for s, v in points)
    keys = [(k, t) for k, t in LOG_KEYS if any(k in s for s in runs.values())]
    fig, axes = plt.subplots(
        2, (len(keys) + 1) // 2, figsize=(5 * ((len(keys) + 1) // 2), 8), squeeze=False)
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
    save_figure(fig, osp.join(out_dir, 'conditioning_logs.png'), dpi=80)
    lines = [
        '# Conditioning over training', '', 'First → last logged value (step in brackets).', '',
        '| run | ' + ' | '.join(t for _, t in keys) + ' |', '|---' * (len(keys) + 1) + '|'
    ]
    for lab, series in runs.items():
        cells = [
            f'{series[k][0][1]:.3g} → {series[k][-1][1]:.3g} ({series[k][-1][0]})'
            if k in series else '-' for k, _ in keys
        ]
        lines.append(f'| {lab} | ' + ' | '.join(cells) + ' |')
    with open(osp.join(out_dir, 'conditioning_logs.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return plotted
