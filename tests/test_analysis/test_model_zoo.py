"""The model zoo: metafiles that agree with configs/ and record only measured numbers (or, in
``*_3rdparty_*`` rows marked ``Converted From``, the numbers the authors of public
checkpoints report), and tools/analysis_tools/eval_model_zoo.py on a demo model trained
here: a recorded metric it reproduces is a match, a higher recorded one a regression (exit
status 1)."""
import glob
import json
import os.path as osp
import re

import pytest
import yaml
from conftest import DEMO_CONFIG, REPO, run_tool

from mmcondattn.analysis import model_zoo
from mmcondattn.analysis.logs import scalars_records

INDEX = osp.join(REPO, 'model-index.yml')
TOOL = 'tools/analysis_tools/eval_model_zoo.py'
CONFIGS = sorted(
    osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs/**/*.py'), recursive=True)
    if '/_base_/' not in p)
# data_root of a config -> its metafile "Training Data"
TRAINING_DATA = {
    'data/coco/': 'COCO',
    'data/imagenet': 'ImageNet-1k',
    'data/shapes_coco/': 'shapes_coco',
    'data/shapes_imagenet/': 'shapes_imagenet',
    'data/shapes_imagenet32/': 'shapes_imagenet32',
    'data/fashion_mnist/': 'Fashion-MNIST',
    'data/trees/': 'NEON trees'
}
GENERATED = ('shapes_coco', 'shapes_imagenet', 'shapes_imagenet32')
TASK_OF = {
    'box AP': 'Object Detection',
    'mask AP': 'Instance Segmentation',
    'Top 1 Accuracy': 'Image Classification'
}


def _third_party(model):
    """A row for a public checkpoint converted from its authors' release (mmdet's
    ``Converted From`` convention), named ``<config stem>`` with ``_3rdparty`` before the
    dataset suffix."""
    return 'Converted From' in model


def _stem_of(name):
    return name.replace('_3rdparty_', '_')


def _metafiles():
    return {
        osp.relpath(p, REPO): yaml.safe_load(open(p))
        for p in sorted(glob.glob(osp.join(REPO, 'configs/*/metafile.yml')))
    }


# ------------------------------------------------------------------ metafiles vs configs
def test_model_index_imports_a_metafile_per_family():
    index = yaml.safe_load(open(INDEX))
    families = sorted(
        osp.basename(d.rstrip('/')) for d in glob.glob(osp.join(REPO, 'configs/*/'))
        if osp.basename(d.rstrip('/')) != '_base_')
    assert sorted(index['Import']) == [f'configs/{f}/metafile.yml' for f in families]
    assert sorted(index['Import']) == sorted(_metafiles())


@pytest.mark.slow
def test_every_config_is_listed_once_under_its_stem():
    models = model_zoo.load_models(INDEX)
    names = [m['Name'] for m in models]
    assert len(names) == len(set(names))
    listed = []
    for m in models:
        assert osp.isfile(m['Config']), m['Config']
        stem = osp.splitext(osp.basename(m['Config']))[0]
        meta = yaml.safe_load(open(m['metafile']))
        if _third_party(next(e for e in meta['Models'] if e['Name'] == m['Name'])):
            assert '_3rdparty_' in m['Name'] and _stem_of(m['Name']) == stem, m['Name']
            continue
        assert m['Name'] == stem, m['Name']
        listed.append(osp.relpath(m['Config'], REPO))
    assert sorted(listed) == CONFIGS, (
        f'not listed: {sorted(set(CONFIGS) - set(listed))}; '
        f'listed twice or not a config: {sorted(set(listed) - set(CONFIGS))}')


def test_collections_and_fields():
    for path, meta in _metafiles().items():
        collections = {c['Name'] for c in meta['Collections']}
        used = set()
        for m in meta['Models']:
            assert m['In Collection'] in collections, (path, m['Name'])
            used.add(m['In Collection'])
            assert set(m) <= {
                'Name', 'In Collection', 'Config', 'Metadata', 'Results', 'Weights',
                'Converted From'
            }, (path, m['Name'], set(m))
            assert set(m['Metadata']) <= {'Training Data', 'Epochs', 'Iterations',
                                          'Training Memory (GB)', 'inference time (ms/im)'}, \
                m['Name']
            stem = m['Name']
            method = next((k for k in ('precond', 'spectral', 'tokens')
                           if f'_{k}_' in stem or stem.endswith(f'_{k}')), None)
            names = {'precond': 'Preconditioned', 'spectral': 'Spectral', 'tokens': 'Tokens'}
            if method:
                assert names[method] in m['In Collection'], (stem, m['In Collection'])
        assert used == collections, (path, collections - used)


@pytest.mark.slow
def test_metadata_matches_each_config():
    """Epochs and Training Data are what the config trains (read from the config)."""
    from mmengine.config import Config
    for m in model_zoo.load_models(INDEX):
        cfg = Config.fromfile(m['Config'])
        meta = yaml.safe_load(open(m['metafile']))
        entry = next(e for e in meta['Models'] if e['Name'] == m['Name'])
        if 'max_iters' in cfg.train_cfg:  # an iteration-based schedule
            assert entry['Metadata']['Iterations'] == cfg.train_cfg.max_iters, m['Name']
        else:
            assert entry['Metadata']['Epochs'] == cfg.train_cfg.max_epochs, m['Name']
        ds = cfg.train_dataloader.dataset
        while 'data_root' not in ds and 'data_prefix' not in ds and 'dataset' in ds:
            ds = ds.dataset
        root = ds.get('data_root') or ds.data_prefix  # MNIST-style: the files' folder as prefix
        assert entry['Metadata']['Training Data'] == TRAINING_DATA[root], m['Name']


def test_only_numbers_measured_here_are_recorded():
    """Results (with the local weights the documented commands produce) only for models
    trained on the generated data; none for COCO / ImageNet (nothing trained here) -- the
    papers' numbers belong to docs/model_zoo.md. The demo models have measured results."""
    measured = 0
    for path, meta in _metafiles().items():
        for m in meta['Models']:
            data = m['Metadata']['Training Data']
            if _third_party(m):
                continue  # test_third_party_rows
            if data not in GENERATED or not m.get('Results'):
                assert 'Results' not in m and 'Weights' not in m, (path, m['Name'])
                assert 'Training Memory (GB)' not in m['Metadata'], (path, m['Name'])
                continue
            if not m.get('Results'):
                continue  # not measured (yet): allowed, but then no Weights either
            assert m.get('Weights'), (path, m['Name'])
            assert m['Weights'].startswith(f"work_dirs/model_zoo/{m['Name']}/"), m['Weights']
            for res in m['Results']:
                assert res['Dataset'] == data, m['Name']
                for metric, value in res['Metrics'].items():
                    assert TASK_OF[metric] == res['Task'], (m['Name'], metric)
                    assert metric in model_zoo.METRICS and 0 <= value <= 100
                    measured += 1
    assert measured, 'the demo models have no measured results'
    doc = open(osp.join(REPO, 'docs/model_zoo.md'), encoding='utf-8').read()
    for path, meta in _metafiles().items():
        for m in meta['Models']:
            for res in m.get('Results', []):
                for metric, value in res['Metrics'].items():  # the doc shows the same number
                    row = next(
                        (r
                         for r in doc.splitlines() if r.startswith('|') and f"`{m['Name']}`" in r),
                        None)
                    assert row and f'{value:.1f}' in row, (m['Name'], metric, value)


@pytest.mark.slow
def test_third_party_rows():
    """``Converted From`` rows: the authors' weights URL (also as ``Weights``) and code,
    their reported box / mask AP, a conditioning-off config of the same arch, and the same
    numbers in docs/model_zoo.md, where they are said to be reported, not measured."""
    from mmengine.config import Config
    doc = open(osp.join(REPO, 'docs/model_zoo.md'), encoding='utf-8').read()
    rows = [(path, m) for path, meta in _metafiles().items() for m in meta['Models']
            if _third_party(m)]
    # the 8 official XCiT Mask R-CNN 3x checkpoints: T12 / S12 / S24 / M24, patch 16 and 8
    assert sorted(m['Name'] for _, m in rows) == sorted(
        f'mask-rcnn_xcit-{a}-p{p}_fpn_ms-crop-3x_3rdparty_coco'
        for a in ('t12', 's12', 's24', 'm24') for p in (16, 8))
    for path, m in rows:
        src = m['Converted From']
        assert set(src) == {'Weights', 'Code'} and src['Weights'] == m['Weights'], m['Name']
        assert re.fullmatch(
            r'https://dl\.fbaipublicfiles\.com/xcit/coco/maskrcnn_xcit_'
            r'(tiny|small|medium)_(12|24)_p(16|8)\.pth', m['Weights'])
        backbone = Config.fromfile(osp.join(REPO, m['Config'])).model.backbone
        assert backbone.type == 'ConditionedXCiT' and not backbone.conditioning, m['Name']
        assert f"_p{backbone.patch_size}." in m['Weights'], m['Name']
        metrics = {k: v for res in m['Results'] for k, v in res['Metrics'].items()}
        assert set(metrics) == {'box AP', 'mask AP'}, m['Name']
        row = next((r for r in doc.splitlines() if r.startswith('|') and f"`{m['Name']}`" in r),
                   None)
        assert row and all(f'{v:.1f}' in row for v in metrics.values()), m['Name']
    assert 'reported by the authors' in doc and 'not measured here' in doc


def test_compare_statuses():
    compare = model_zoo.compare
    metrics = {'coco/bbox_mAP': 0.25, 'coco/segm_mAP': 0.2, 'accuracy/top1': 75.0}
    rows = compare({'box AP': 25.0, 'mask AP': 20.2, 'Top 1 Accuracy': 70.0}, metrics, 0.1)
    assert [r[3] for r in rows] == ['match', 'REGRESSION', 'better']
    assert rows[0][2] == 25.0
    assert compare({'box AP': 25.05}, metrics, 0.1)[0][3] == 'match'
    assert compare({'Top 1 Accuracy': 75.0}, {}, 0.1)[0][3] == 'error'  # metric not logged
    assert [r[3] for r in compare({}, metrics, 0.1)] == ['measured'] * 3


# --------------------------------------------------------------- the tool, end to end
NAME = osp.splitext(osp.basename(DEMO_CONFIG))[0]


@pytest.fixture(scope='module')
def demo_checkpoint(coco_workspace):
    """One epoch (4 iterations) of the R-18 demo config on 8 images of 96 px; returns the
    checkpoint and the box / mask AP its final validation logged (val set = test set)."""
    wd = coco_workspace / 'work_dirs/zoo_e2e'
    r = run_tool([
        'tools/train.py', DEMO_CONFIG, '--work-dir',
        str(wd), '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1'
    ],
                 cwd=coco_workspace)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(scalars_records(wd))
    last = [r for r in rows if 'coco/bbox_mAP' in r][-1]
    return str(wd / 'epoch_1.pth'), 100 * last['coco/bbox_mAP'], 100 * last['coco/segm_mAP']


def _index(folder, box, mask, weights=None):
    """A model index with the demo model recording ``box`` / ``mask`` AP."""
    folder.mkdir()
    model = {
        'Name':
        NAME,
        'In Collection':
        'Demo',
        'Config':
        DEMO_CONFIG,
        'Metadata': {
            'Training Data': 'shapes_coco',
            'Epochs': 1
        },
        'Results': [{
            'Task': 'Object Detection',
            'Dataset': 'shapes_coco',
            'Metrics': {
                'box AP': round(box, 4)
            }
        }, {
            'Task': 'Instance Segmentation',
            'Dataset': 'shapes_coco',
            'Metrics': {
                'mask AP': round(mask, 4)
            }
        }]
    }
    if weights:
        model['Weights'] = weights
    other = {
        'Name': 'not_evaluated',
        'In Collection': 'Demo',
        'Config': DEMO_CONFIG,
        'Results': [{
            'Task': 'Object Detection',
            'Dataset': 'shapes_coco',
            'Metrics': {
                'box AP': 99.0
            }
        }]
    }
    meta = {'Collections': [{'Name': 'Demo'}], 'Models': [model, other]}
    (folder / 'metafile.yml').write_text(yaml.safe_dump(meta, sort_keys=False))
    (folder / 'model-index.yml').write_text(yaml.safe_dump({'Import': ['metafile.yml']}))
    return str(folder / 'model-index.yml')


@pytest.mark.e2e
def test_eval_tool_reports_match_then_regression(demo_checkpoint, coco_workspace, tmp_path):
    ckpt, box, mask = demo_checkpoint
    # 1. the recorded metrics are those of the trained model: match, exit 0
    ckdir = tmp_path / 'ckpts'
    ckdir.mkdir()
    (ckdir / f'{NAME}.pth').symlink_to(ckpt)
    index = _index(tmp_path / 'a', box, mask)
    out = tmp_path / 'a.json'
    r = run_tool([
        TOOL, '--model-index', index, '--checkpoints',
        str(ckdir), '--work-dir',
        str(tmp_path / 'wd_a'), '--json',
        str(out)
    ],
                 cwd=coco_workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [(row['metric'], row['status']) for row in res['rows']] == \
        [('box AP', 'match'), ('mask AP', 'match')], res
    # the tool's own evaluation reproduces the training's final validation
    assert abs(res['rows'][0]['measured'] - box) < 1e-3
    assert abs(res['rows'][1]['measured'] - mask) < 1e-3
    assert res['skipped'] == ['not_evaluated']
    assert re.search(rf'\|\s*{re.escape(NAME)}\s*\|\s*box AP\s*\|.*\|\s*match\s*\|', r.stdout)

    # 2. a recorded box AP 5 points above what the checkpoint reaches: regression, exit 1;
    #    the checkpoint found through the model's (local) Weights this time
    index = _index(tmp_path / 'b', box + 5.0, mask, weights=ckpt)
    out = tmp_path / 'b.json'
    r = run_tool([
        TOOL, '--model-index', index, '--work-dir',
        str(tmp_path / 'wd_b'), '--filter', 'r18', '--json',
        str(out)
    ],
                 cwd=coco_workspace)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [(row['metric'], row['status']) for row in res['rows']] == \
        [('box AP', 'REGRESSION'), ('mask AP', 'match')], res
    assert 'REGRESSION' in r.stdout


@pytest.mark.e2e
def test_eval_tool_argument_errors(tmp_path):
    r = run_tool([TOOL, '--model-index', str(tmp_path / 'none.yml')], cwd=tmp_path)
    assert r.returncode == 2 and 'not found' in r.stderr
    r = run_tool([TOOL, '--checkpoint', 'nope=missing.pth'], cwd=tmp_path)
    assert r.returncode == 2 and 'missing.pth' in r.stderr
    # the repository's index with no checkpoints: every model skipped, nothing fails
    r = run_tool([TOOL, '--checkpoints', str(tmp_path), '--filter', '_coco$'], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'no model evaluated' in r.stdout
