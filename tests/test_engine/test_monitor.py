"""ConditionMonitorHook and measure_conditioning: the logged numbers equal an independent
computation, training is the same with the hook on and off, all three families work (the
classification forms through the real Runner, the detection forms directly)."""
import math

import pytest
import torch
from cond_helpers import ALL_METHODS, BACKBONES, cls_config, kappa, train

from mmcondattn.analysis.logs import scalars_records

LAM = ALL_METHODS['spectral']['lam']


def _backbone(family, conditioning=None):
    """The classification form of ``family``, initialised with seed 0."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import mmcondattn.openmmlab  # noqa: F401
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        bb = MODELS.build(dict(BACKBONES[family], conditioning=conditioning))
    bb.init_weights()
    return bb


def _qkv_blocks(attn, lam=0.0):
    """Effective W_Q, W_K, W_V computed here: the D×D blocks of qkv.weight + lam·I."""
    w = attn.qkv.weight.detach().double()
    return [b + lam * torch.eye(*b.shape, dtype=b.dtype) for b in w.chunk(3)]


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    from mmcondattn.datasets import make_imagenet_folder
    return make_imagenet_folder(
        str(tmp_path_factory.mktemp('imnet')),
        num_train_per_class=4,
        num_val_per_class=2,
        img_size=32,
        seed=0)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['vit', 'swin', 'xcit'])
def test_measure_matches_direct_svd(family):
    from mmcondattn.models import attention_layers, measure_conditioning
    bb = _backbone(family, ALL_METHODS)
    layers = attention_layers(bb)
    x_in = {}
    handle = layers[0][1].register_forward_pre_hook(lambda m, a: x_in.setdefault('x', a[0]))
    res = measure_conditioning(bb, torch.randn(2, 3, 32, 32))
    handle.remove()
    rows = res['layers']
    assert [r['name'] for r in rows] == [n for n, _ in layers] and len(rows) >= 2
    for row, (_, attn) in zip(rows, layers):
        for t, w in zip('qkv', _qkv_blocks(attn, LAM)):
            assert row[f'kappa_w{t}'] == pytest.approx(kappa(w), rel=1e-6)  # W + C in fp32
            assert row[f'sigma_min_w{t}'] == pytest.approx(
                torch.linalg.svdvals(w)[-1].item(), rel=1e-6)
        heads = attn.num_heads
        assert len(row['kappa_attn_heads']) == heads
        assert row['kappa_attn'] == pytest.approx(sum(row['kappa_attn_heads']) / heads)
        assert all(
            math.isfinite(row[k]) and row[k] >= 1.0 for k in row
            if k.startswith('kappa_') and not k.endswith('heads'))
    # κ(X) of layer 0: one κ per image (per window for Swin), from its own recorded input
    x = x_in['x']
    assert rows[0]['kappa_x'] == pytest.approx(sum(kappa(xi) for xi in x) / len(x), rel=1e-9)
    n_keys = x.shape[1] if family != 'xcit' else x.shape[2] // layers[0][1].num_heads
    assert 0 < rows[0]['entropy_attn'] <= math.log(n_keys) + 1e-6
    # token conditioning gives κ(X + C) <= 2 (docs/methods.md)
    assert res['tokens']['kappa'] <= 2 + 1e-6
    base = measure_conditioning(_backbone(family), torch.randn(2, 3, 32, 32))
    assert base['tokens']['kappa'] > 2
    for row, (_, attn) in zip(base['layers'], attention_layers(_backbone(family))):
        assert row['kappa_wv'] == pytest.approx(kappa(_qkv_blocks(attn)[2]), rel=1e-9)


def test_measure_leaves_the_model_as_it_was():
    from mmcondattn.models import measure_conditioning
    bb = _backbone('xcit', ALL_METHODS).train()  # BatchNorm in the patch embedding and LPI
    bb.patch_embed.eval()  # a frozen part stays frozen
    flags = {n: m.training for n, m in bb.named_modules()}
    buffers = {k: v.clone() for k, v in bb.state_dict().items()}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in bb.modules())
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    x = torch.randn(2, 3, 32, 32)
    torch.set_rng_state(rng)
    ref = measure_conditioning(bb, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert flags == {n: m.training for n, m in bb.named_modules()}
    assert all(torch.equal(v, bb.state_dict()[k]) for k, v in buffers.items())
    assert hooks == sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in bb.modules())
    with torch.autocast('cpu', dtype=torch.bfloat16):  # AMP: measured in fp32 / fp64 anyway
        amp = measure_conditioning(bb, x)
    assert amp == ref


def test_hook_rejects_bad_arguments_and_models_without_attention():
    from mmengine.registry import HOOKS

    import mmcondattn.openmmlab  # noqa: F401
    from mmcondattn.models import measure_conditioning
    with pytest.raises(ValueError, match='interval must be an int >= 1'):
        HOOKS.build(dict(type='ConditionMonitorHook', interval=0))
    with pytest.raises(ValueError, match="dtype must be one of \\['float32', 'float64'\\]"):
        HOOKS.build(dict(type='ConditionMonitorHook', dtype='half'))
    with pytest.raises(ValueError, match='no attention layer'):
        measure_conditioning(torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8))


@pytest.mark.e2e
@pytest.mark.parametrize('family', ['vit', 'swin', 'xcit'])
def test_hook_logs_kappa_of_the_trained_weights(family, imagenet, tmp_path):
    """Real Runner, 4 iterations, interval 2: records at steps 0, 2 and 4 (after the last
    iteration); the last κ(W) equal svdvals of the final weights (+ lam·I)."""
    cfg = cls_config(tmp_path / f'{family}.py', family, ALL_METHODS, data_root=imagenet)
    runner = train(cfg, tmp_path / 'wd', f'monitor_{family}')
    recs = [r for r in scalars_records(tmp_path / 'wd') if 'cond/kappa_attn_mean' in r]
    layer_recs = [r for r in scalars_records(tmp_path / 'wd') if 'cond_layers/kappa_wq/0' in r]
    assert [r['step'] for r in recs] == [0, 2, 4] == [r['step'] for r in layer_recs]
    losses = [r['loss'] for r in scalars_records(tmp_path / 'wd') if 'loss' in r]
    assert len(losses) == 4
    from mmcondattn.models import attention_layers
    layers = attention_layers(runner.model.backbone)
    last = layer_recs[-1]
    for i, (_, attn) in enumerate(layers):
        for t, w in zip('qkv', _qkv_blocks(attn, LAM)):
            assert last[f'cond_layers/kappa_w{t}/{i}'] == pytest.approx(kappa(w), rel=1e-6)
    wq = [recs[-1][f'cond/kappa_wq_{s}'] for s in ('mean', 'max')]
    per = [last[f'cond_layers/kappa_wq/{i}'] for i in range(len(layers))]
    assert wq == pytest.approx([sum(per) / len(per), max(per)])
    assert layer_recs[0]['cond_layers/kappa_wq/0'] != last['cond_layers/kappa_wq/0']  # it trained
    assert recs[-1]['cond/kappa_tokens'] <= 2 + 1e-6
    hub = runner.message_hub.get_scalar('cond/kappa_attn_mean').current()
    assert hub == pytest.approx(recs[-1]['cond/kappa_attn_mean'])
    assert not any(m._forward_hooks for m in runner.model.backbone.modules()
                   if type(m).__name__.endswith(('Attention', 'XCA', 'MSA')))

    if family == 'xcit':  # the same run without the hook: the same losses
        cfg_off = cls_config(
            tmp_path / 'off.py', family, ALL_METHODS, data_root=imagenet, hook_interval=None)
        train(cfg_off, tmp_path / 'wd_off', 'monitor_off')
        off = [r['loss'] for r in scalars_records(tmp_path / 'wd_off') if 'loss' in r]
        assert off == losses
        assert not any('cond/kappa_attn_mean' in r for r in scalars_records(tmp_path / 'wd_off'))


@pytest.mark.parametrize('family', ['swin', 'xcit'])
def test_detection_scope_and_backbones(family):
    """mmdet's scope builds the hook (root HOOKS); the detection forms (mmdet's Swin
    WindowMSA, XCiT with its pyramid) measure like the classifiers."""
    from mmdet.registry import HOOKS as DET_HOOKS
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import HOOKS as CLS_HOOKS

    from mmcondattn.engine import ConditionMonitorHook
    from mmcondattn.models import attention_layers, measure_conditioning
    for scope, hooks in (('mmdet', DET_HOOKS), ('mmpretrain', CLS_HOOKS)):
        with DefaultScope.overwrite_default_scope(scope):
            assert isinstance(hooks.build(dict(type='ConditionMonitorHook')), ConditionMonitorHook)
    arch = dict(
        swin=dict(
            arch=dict(embed_dims=16, depths=[1, 1], num_heads=[2, 2]),
            window_size=4,
            out_indices=(0, 1)),
        xcit=dict(
            arch=dict(embed_dims=32, depth=4, num_heads=2), patch_size=8,
            out_indices=(0, 1, 2, 3)))[family]
    torch.manual_seed(0)
    name = dict(swin='ConditionedSwin', xcit='ConditionedXCiT')[family]
    with DefaultScope.overwrite_default_scope('mmdet'):
        bb = DET_MODELS.build(dict(type=name, conditioning=dict(spectral=dict(mode='svd')), **arch))
    res = measure_conditioning(bb, torch.randn(1, 3, 64, 64))
    layers = attention_layers(bb)
    assert len(res['layers']) == len(layers) >= 2
    for row, (_, attn) in zip(res['layers'], layers):
        w = attn.qkv.weight.detach().double().chunk(3)
        u, sv, vh = torch.linalg.svd(w[0])
        assert row['kappa_wq'] == pytest.approx(kappa(w[0] + sv[0] * u @ vh), rel=1e-6)
        assert row['kappa_wq'] <= 2 + 1e-5  # svd spectral: κ(W + C) <= 2
