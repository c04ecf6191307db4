"""Condition numbers per layer and over training (mmcondattn.analysis.condition_report and its
command line, tools/analysis_tools/conditioning.py): tables, CSV and PNG plots per layer for
baseline and conditioned models of each family, checkpoints, and κ over training from the
hook's logs."""
import csv
import os.path as osp

import pytest
import torch
from cond_helpers import ALL_METHODS, cls_config, kappa, train
from conftest import run_tool

from mmcondattn.analysis.condition_report import logs_report, measure_models, read_logs
from mmcondattn.analysis.logs import scalars_records

TOOL = 'tools/analysis_tools/conditioning.py'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _check_png(path):
    import matplotlib.image as mpimg
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    assert osp.getsize(path) > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


@pytest.mark.slow
@pytest.mark.parametrize('family', ['vit', 'swin', 'xcit'])
def test_baseline_vs_conditioned_per_layer(family, tmp_path):
    base = cls_config(tmp_path / f'{family}_base.py', family)
    cond = cls_config(tmp_path / f'{family}_cond.py', family, ALL_METHODS)
    out = tmp_path / 'out'
    res = measure_models([('baseline', base, None), ('conditioned', cond, None)],
                         str(out),
                         num_images=2,
                         img_size=32)
    for name in ('conditioning.md', 'conditioning.csv', 'conditioning_heads.csv'):
        assert (out / name).stat().st_size > 0
    _check_png(out / 'conditioning_layers.png')
    rows = _csv(out / 'conditioning.csv')
    layers = {
        m: [r for r in rows if r['model'] == m and r['layer'] != 'tokens']
        for m in ('baseline', 'conditioned')
    }
    assert len(layers['baseline']) == len(layers['conditioned']) == 2
    # the plotted bars are the table's numbers
    for key, per_model in res['plotted'].items():
        for model, heights in per_model.items():
            assert heights == [float(r[key]) for r in layers[model]]
    tokens = {r['model']: float(r['kappa_x']) for r in rows if r['layer'] == 'tokens'}
    assert tokens['conditioned'] <= 2 + 1e-6 < tokens['baseline']
    md = (out / 'conditioning.md').read_text()
    assert '| baseline |' in md and '| conditioned |' in md and '(×' in md
    assert len(_csv(out / 'conditioning_heads.csv')) == 2 * 2 * 2  # models × layers × heads


@pytest.mark.slow
def test_checkpoint_and_dataset_images(tmp_path):
    """A checkpoint's weights are what is measured (κ(W) from svdvals of its weights); the
    config's test dataset is used when it exists."""
    from mmcondattn.datasets import make_imagenet_folder
    data = make_imagenet_folder(
        str(tmp_path / 'imnet'), num_train_per_class=0, num_val_per_class=1, img_size=40, seed=0)
    cfg = cls_config(tmp_path / 'xcit.py', 'xcit', dict(spectral=dict(lam=2.0)), data_root=data)
    res0 = measure_models([('xcit', cfg, None)], str(tmp_path / 'init'), num_images=2)
    init = res0['results']['xcit']  # the initialised model's numbers
    assert res0['sources'] == {'xcit': '2 images of the test_dataloader dataset'}
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    torch.manual_seed(5)
    net = MODELS.build(Config.fromfile(cfg).model)
    torch.save({'state_dict': net.state_dict(), 'meta': {}}, tmp_path / 'a.pth')
    out = tmp_path / 'ckpt'
    measure_models([('xcit@a', cfg, str(tmp_path / 'a.pth'))], str(out), num_images=2)
    rows = [r for r in _csv(out / 'conditioning.csv') if r['layer'] != 'tokens']
    w = net.backbone.xca_layers[1].attn.qkv.weight.detach().double().chunk(3)[0]
    want = kappa(w + 2.0 * torch.eye(32, dtype=torch.float64))
    assert float(rows[1]['kappa_wq']) == pytest.approx(want, rel=1e-6)  # W + C in fp32
    assert float(rows[1]['kappa_wq']) != init['layers'][1]['kappa_wq']


@pytest.mark.e2e
def test_mismatched_checkpoint_is_one_line(tmp_path):
    vit = cls_config(tmp_path / 'vit.py', 'vit')
    xcit = cls_config(tmp_path / 'xcit.py', 'xcit')
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import mmcondattn.openmmlab  # noqa: F401
    init_default_scope('mmpretrain')
    torch.save({'state_dict': MODELS.build(Config.fromfile(xcit).model).state_dict()},
               tmp_path / 'xcit.pth')
    r = run_tool(
        [TOOL, vit, str(tmp_path / 'xcit.pth'), '--out-dir',
         str(tmp_path / 'o')], cwd=tmp_path)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.count('\n') == 0, r.stderr[-2000:]
    assert err.startswith('error: checkpoint') and 'missing keys' in err
    assert 'unexpected keys' in err and 'backbone.layers.0' in err


@pytest.mark.e2e
def test_bad_labels_and_missing_config(tmp_path):
    cfg = cls_config(tmp_path / 'vit.py', 'vit')
    for args, message in (([cfg, '--labels', 'a', 'b'], 'gives 2 labels for 1 models'),
                          ([str(tmp_path / 'nope.py')], 'config file not found'),
                          (['--logs', str(tmp_path)], 'no ConditionMonitorHook records')):
        r = run_tool([TOOL, *args], cwd=tmp_path)
        err = r.stderr.strip()
        assert r.returncode == 2 and err.count('\n') == 0, r.stderr[-2000:]
        assert err.startswith('error: ') and message in err


@pytest.mark.e2e
def test_kappa_over_training_from_logs(tmp_path):
    from mmcondattn.datasets import make_imagenet_folder
    data = make_imagenet_folder(
        str(tmp_path / 'imnet'), num_train_per_class=4, num_val_per_class=0, img_size=32, seed=0)
    wds = []
    for name, cond in (('base', None), ('cond', ALL_METHODS)):
        cfg = cls_config(
            tmp_path / f'{name}.py', 'xcit', cond, data_root=data, hook_interval=1, max_iters=3)
        train(cfg, tmp_path / name, f'logs_{name}')
        wds.append(str(tmp_path / name))
    out = tmp_path / 'out'
    runs = {label: read_logs(wd) for label, wd in zip(('baseline', 'conditioned'), wds)}
    plotted = logs_report(runs, str(out))
    _check_png(out / 'conditioning_logs.png')
    assert (out / 'conditioning_logs.md').stat().st_size > 0
    for label, wd in zip(('baseline', 'conditioned'), wds):
        logged = [r for r in scalars_records(wd) if 'cond/kappa_attn_mean' in r]
        steps, vals = plotted['cond/kappa_attn_mean'][label]
        assert steps == [r['step'] for r in logged] == [0, 1, 2, 3]
        assert vals == [r['cond/kappa_attn_mean'] for r in logged]
    rows = _csv(out / 'conditioning_logs.csv')
    assert {r['run'] for r in rows} == {'baseline', 'conditioned'}
    tok = plotted['cond/kappa_tokens']
    assert max(tok['conditioned'][1]) <= 2 + 1e-6 < min(tok['baseline'][1])


@pytest.mark.slow
def test_drift_of_unconditioned_weights_is_reported(tmp_path):
    """A config with conditioning and a checkpoint trained without it: conditioning.md says
    what the weights were trained with and how far the model as loaded moves their output."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    plain = cls_config(tmp_path / 'plain.py', 'vit')
    init_default_scope('mmpretrain')
    torch.manual_seed(5)
    net = MODELS.build(Config.fromfile(plain).model)
    torch.save({'state_dict': net.state_dict(), 'meta': {}}, tmp_path / 'plain.pth')
    svd = dict(spectral=dict(mode='svd'))
    starts = [('at once', svd), ('warm', dict(svd, warm_start=dict(iters=3)))]
    ckpt = str(tmp_path / 'plain.pth')
    specs = [(n, cls_config(tmp_path / f'{n}.py', 'vit', cond), ckpt) for n, cond in starts]
    res = measure_models(specs, str(tmp_path / 'out'), num_images=2)
    (name, at_once), = res['loads']['at once']
    assert name == 'backbone' and at_once['trained'] == 'without conditioning (no record)'
    assert at_once['drift'] > 0.01 and not at_once['same']
    assert res['loads']['warm'][0][1]['drift'] == 0.0  # α = 0: the checkpoint's function
    md = (tmp_path / 'out/conditioning.md').read_text()
    assert "## Loaded weights against the model's conditioning" in md
    assert f"{100 * at_once['drift']:.1f} %" in md and '| warm | backbone |' in md
