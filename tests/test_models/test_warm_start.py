"""Conditioning weights trained without it: the record checkpoints carry, the one log line on a
load that differs from it, and the warm start (strength α ramped 0 -> 1), on the conditioned
backbones of both registries (small models, CPU)."""
import copy
import functools
import io
from collections import OrderedDict

import pytest
import torch
from cond_helpers import BACKBONES, build, mmengine_log

import mmcondattn.openmmlab  # noqa: F401  registers the backbones
from mmcondattn.conditioning import (ConditioningConfigError, PreconditionedLinear, SpectralLinear,
                                     TokenConditioner, fold_conditioning, parse_conditioning,
                                     precondition)
from mmcondattn.conditioning.state import STATE_KEYS, conditioned_parts

METHODS = {
    'precond': dict(precond=dict()),
    'spectral': dict(spectral=dict(lam=10.)),
    'svd': dict(spectral=dict(mode='svd')),
    'tokens': dict(tokens=dict(solver='svd')),
    'all': dict(precond=dict(), spectral=dict(lam=2.), tokens=dict(solver='svd')),
}
FORMS = {
    'vit-cls': ('mmpretrain', BACKBONES['vit']),
    'swin-cls': ('mmpretrain', BACKBONES['swin']),
    'xcit-cls': ('mmpretrain', BACKBONES['xcit']),
    'xcit-det': ('mmdet',
                 dict(
                     type='ConditionedXCiT',
                     patch_size=8,
                     out_indices=(0, 1, 2, 3),
                     arch=dict(embed_dims=32, depth=4, num_heads=2))),
    'vit-det': ('mmdet', {
        k: v
        for k, v in BACKBONES['vit'].items()
    }),
    'swin-det': ('mmdet',
                 dict(
                     type='ConditionedSwin',
                     embed_dims=16,
                     depths=[1, 1],
                     num_heads=[2, 2],
                     strides=(4, 2),
                     window_size=4,
                     out_indices=(0, 1),
                     pretrain_img_size=32)),
}


@pytest.fixture
def log_lines():
    """The messages mmengine's current logger emits during the test."""
    with mmengine_log() as messages:
        yield messages


def _build(form, conditioning=None, seed=0):
    scope, cfg = FORMS[form]
    torch.manual_seed(seed)
    model = build(scope, dict(copy.deepcopy(cfg), drop_path_rate=0., conditioning=conditioning))
    model.init_weights()
    return model.eval()


def _out(model, x):
    with torch.no_grad():
        return torch.cat([o.flatten() for o in model(x)])


def _x(form, batch=2):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _train_forwards(model, n, x):
    model.train()
    for _ in range(n):
        sum(o.float().mean() for o in model(x)).backward()
    model.eval()


@functools.lru_cache(maxsize=None)
def _plain(form):
    return _build(form, seed=3).state_dict()


def _plain_state(form):
    """A state dict trained without conditioning (stock keys, no record); a fresh copy."""
    return OrderedDict(_plain(form))


# ------------------------------------------------------------------------ options
def test_warm_start_options():
    cfg = parse_conditioning(dict(precond=dict(), warm_start=dict(iters=5)))
    assert cfg.warm_start.iters == 5 and cfg.methods() == {'precond': cfg.to_dict()['precond']}
    assert parse_conditioning(dict(spectral=True, warm_start=True)).warm_start.iters == 1000
    for bad, says in [(dict(precond=True, warm_start=dict(iters=0)), 'warm_start.iters'),
                      (dict(precond=True, warm_start=dict(iter=3)), "did you mean 'iters'"),
                      (dict(warm_start=dict(iters=3)), 'none is on')]:
        with pytest.raises(ConditioningConfigError, match=says):
            parse_conditioning(bad)
    assert str(parse_conditioning(dict(precond=True, spectral=dict(lam=1.)))) == \
        'precond + spectral(lam=1.0)'


def test_precondition_strength_is_the_blended_diagonal():
    out = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    c_out = precondition(out)
    for a in (0., 0.25, 1.):
        torch.testing.assert_close(precondition(out, strength=a), (1 - a) * out + a * c_out)


# ------------------------------------------------------------------------ warm start
@pytest.mark.parametrize('method', list(METHODS))
@pytest.mark.parametrize('form', list(FORMS))
def test_warm_start_keeps_the_loaded_function_then_becomes_the_method(form, method):
    x = _x(form)
    plain_sd = _plain_state(form)
    stock = _build(form)
    stock.load_state_dict(plain_sd)
    want = _out(stock, x)
    warm = _build(form, dict(METHODS[method], warm_start=dict(iters=4)))
    warm.load_state_dict(plain_sd, strict=False)
    # as loaded: the checkpoint's function exactly (α = 0 calls the stock ops)
    assert torch.equal(_out(warm, x), want)
    assert warm.conditioning_state.strength() == 0
    # the ramp: one training forward counts once; eval forwards do not count
    _train_forwards(warm, 1, x)
    _out(warm, x)
    assert int(warm.conditioning_state.step) == 1
    assert all(p.strength == 0.25 for p in conditioned_parts(warm))
    _train_forwards(warm, 3, x)
    assert warm.conditioning_state.strength() == 1
    # full strength: exactly the method (same weights, no warm start)
    method_model = _build(form, METHODS[method])
    method_model.load_state_dict(warm.state_dict(), strict=False)
    assert torch.equal(_out(warm, x), _out(method_model, x))


@pytest.mark.parametrize('form', ['vit-cls', 'swin-cls', 'xcit-det'])
def test_warm_start_resumes_mid_ramp_and_folds_at_any_strength(form):
    x = _x(form)
    cond = dict(METHODS['all'], warm_start=dict(iters=10))
    a = _build(form, cond)
    _train_forwards(a, 3, x)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = _build(form, cond, seed=7)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert int(b.conditioning_state.step) == 3 and b.conditioning_state.strength() == 0.3
    torch.testing.assert_close(_out(b, x), _out(a, x), rtol=0, atol=0)
    _train_forwards(a, 1, x)
    _train_forwards(b, 1, x)
    assert int(b.conditioning_state.step) == 4
    # folding at α = 0.4: W + 0.4·C, same function, spectral gone from the record
    before = _out(b, x)
    fold_conditioning(b)
    assert not any(isinstance(m, SpectralLinear) for m in b.modules())
    torch.testing.assert_close(_out(b, x), before, rtol=1e-4, atol=1e-4)
    assert 'spectral' not in b.conditioning_state.cfg.methods()


def test_strength_reaches_every_part():
    model = _build('vit-cls', dict(METHODS['all'], warm_start=dict(iters=2)))
    kinds = {type(p) for p in conditioned_parts(model)}
    assert kinds == {PreconditionedLinear, SpectralLinear, TokenConditioner}
    assert 'strength=0' in repr(model)


# ------------------------------------------------------------------------ the record
@pytest.mark.parametrize('method', ['precond', 'spectral', 'tokens', 'all'])
@pytest.mark.parametrize('form', list(FORMS))
def test_unconditioned_weights_log_one_line_with_the_drift(form, method, log_lines):
    model = _build(form, METHODS[method])
    res = model.load_state_dict(_plain_state(form), strict=False)
    assert not [k for k in res.missing_keys if k.endswith(STATE_KEYS)]
    lines = [m for m in log_lines if 'loaded weights trained' in m]
    assert len(lines) == 1, log_lines
    assert 'without conditioning (no record)' in lines[0] and method.split('_')[0] in \
        lines[0].replace('precond + spectral(lam=2.0) + tokens(solver=svd)', 'all')
    assert 'warm_start=dict(iters=N)' in lines[0]
    change = float(lines[0].split('changes by ')[1].split(' %')[0])
    assert change == pytest.approx(100 * model.conditioning_state.last_load['drift'], abs=0.06)
    assert change > 0.1  # every method moves a trained function


def test_drift_is_zero_for_a_warm_start_at_step_0(log_lines):
    model = _build('vit-cls', dict(METHODS['all'], warm_start=dict(iters=5)))
    model.load_state_dict(_plain_state('vit-cls'), strict=False)
    (line, ) = [m for m in log_lines if 'loaded weights trained' in m]
    assert 'changes by 0.0 %' in line and 'ramps α to 1 over 5' in line


@pytest.mark.parametrize('method', ['precond', 'all'])
def test_same_conditioning_logs_nothing_and_the_record_round_trips(method, log_lines):
    a = _build('xcit-cls', METHODS[method])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert 'conditioning_state.record' in sd
    b = _build('xcit-cls', METHODS[method], seed=5)
    b.load_state_dict(sd)
    assert not [m for m in log_lines if 'loaded weights' in m]
    torch.testing.assert_close(_out(b, _x('xcit-cls')), _out(a, _x('xcit-cls')))
    # another conditioning: named, with the drift
    c = _build('xcit-cls', METHODS['spectral'])
    c.load_state_dict(sd, strict=False)
    (line, ) = [m for m in log_lines if 'loaded weights' in m]
    assert 'trained with precond' in line and 'applies spectral' in line


def test_mmengine_checkpoint_loading_logs_the_drift(tmp_path, log_lines):
    """``init_cfg=dict(type='Pretrained')`` goes through mmengine's own loader."""
    path = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict=_plain_state('swin-cls')), path)
    scope, cfg = FORMS['swin-cls']
    model = build(
        scope,
        dict(
            cfg, conditioning=METHODS['precond'], init_cfg=dict(type='Pretrained',
                                                                checkpoint=path)))
    model.init_weights()
    assert len([m for m in log_lines if 'without conditioning (no record)' in m]) == 1


@pytest.mark.e2e
def test_runner_resumes_the_ramp(tmp_path):
    """mmengine's Runner: a run stopped mid-warm-up and resumed continues the ramp where it
    stopped (step in the checkpoint), and ends at full strength."""
    from cond_helpers import cls_config, train

    from mmcondattn.datasets import make_imagenet_folder
    data = make_imagenet_folder(
        str(tmp_path / 'imnet'), num_train_per_class=4, num_val_per_class=1, img_size=32, seed=0)
    cond = dict(precond=dict(), spectral=dict(lam=1.), warm_start=dict(iters=6))
    cfg = cls_config(tmp_path / 'vit.py', 'vit', cond, data_root=data, hook_interval=2, max_iters=4)
    runner = train(cfg, tmp_path / 'run', 'first')
    state = runner.model.backbone.conditioning_state
    assert int(state.step) == 4
    # ConditionMonitorHook logs α at steps 0, 2 and after the last
    logged = list(runner.message_hub.get_scalar('cond/strength').data[0])
    assert logged == pytest.approx([0, 2 / 6, 4 / 6])
    from mmengine.config import Config
    full = Config.fromfile(cfg)
    full.train_cfg.max_iters = 8
    full.resume, full.load_from = True, str(tmp_path / 'run/iter_4.pth')
    full.work_dir, full.experiment_name = str(tmp_path / 'run'), 'resumed'
    from mmengine.runner import Runner
    resumed = Runner.from_cfg(full)
    resumed.train()
    state = resumed.model.backbone.conditioning_state
    assert int(state.step) == 8 and state.strength() == 1
    assert all(p.strength == 1 for p in conditioned_parts(resumed.model))


def test_cls2det_carries_the_record(log_lines):
    """A conditioned classifier converted for detection (tools/model_converters/cls2det.py's
    function) keeps its record: the detection form with the same conditioning logs nothing,
    one without it names what the checkpoint was trained with."""
    from mmcondattn.converters import classifier_to_detector
    scope, cfg = FORMS['vit-cls']
    torch.manual_seed(0)
    classifier = build(
        'mmpretrain',
        dict(
            type='ImageClassifier',
            backbone=dict(cfg, conditioning=METHODS['precond']),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=32)))
    det_sd = classifier_to_detector(classifier.state_dict(), 'vit')
    assert 'conditioning_state.record' in det_sd
    _build('vit-det', METHODS['precond']).load_state_dict(det_sd, strict=False)
    assert not [m for m in log_lines if 'loaded weights' in m]
    _build('vit-det', METHODS['tokens']).load_state_dict(det_sd, strict=False)
    (line, ) = [m for m in log_lines if 'loaded weights' in m]
    assert 'trained with precond' in line and "the checkpoint's precond is not applied" in line


def test_condition_model_on_trained_weights_reports_the_drift(log_lines):
    """condition_model on a built model (weights it has, e.g. a public checkpoint): the same
    line as a load; the backbones, conditioned while they are built, say nothing."""
    from mmcondattn import condition_model
    stock = build(
        'mmpretrain',
        dict(type='VisionTransformer', arch=BACKBONES['vit']['arch'], img_size=32, patch_size=8))
    stock.init_weights()
    assert not [m for m in log_lines if 'weights trained' in m]
    condition_model(stock, METHODS['spectral'])
    (line, ) = [m for m in log_lines if 'weights trained' in m]
    assert line.startswith('VisionTransformer: weights trained without conditioning')
    assert 'changes by' in line and 'warm_start=dict(iters=N)' in line
    _build('vit-cls', METHODS['spectral'])
    assert len([m for m in log_lines if 'weights trained' in m]) == 1
