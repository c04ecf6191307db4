"""condition_model on timm's ViT / DeiT, Swin and XCiT (real timm classes, random weights)."""
import copy

import pytest
import timm  # requirements/tests.txt
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention

from mmcondattn import condition_model, fold_conditioning
from mmcondattn.conditioning import (ConditioningConfigError, PreconditionedLinear, SpectralLinear,
                                     condition_number, condition_tokens, spectral_correction)

# name: (timm model, create_model kwargs, input size)
MODELS = {
    'vit': ('vit_tiny_patch16_224', dict(img_size=32), 32),
    'deit_distilled': ('deit_tiny_distilled_patch16_224', dict(img_size=32), 32),
    'swin': ('swin_tiny_patch4_window7_224', dict(img_size=32, window_size=2,
                                                  depths=(1, 1, 2, 1)), 32),
    'xcit': ('xcit_nano_12_p16_224', dict(img_size=32), 32),
}
ATTENTION = {
    'vit': Attention,
    'deit_distilled': Attention,
    'swin': timm.models.swin_transformer.WindowAttention,
    'xcit': timm.models.xcit.XCA
}
ALL = dict(precond=dict(), spectral=dict(mode='svd'), tokens=dict())


def build(family, dtype=torch.float32):
    name, kwargs, size = MODELS[family]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model.to(dtype), x.to(dtype)


def layers(model, family):
    return [m for m in model.modules() if type(m) is ATTENTION[family]]


@pytest.mark.parametrize('family', MODELS)
@pytest.mark.parametrize('conditioning', [None, {}, dict(precond=None, tokens=False)])
def test_conditioning_off_is_the_stock_model(family, conditioning):
    stock, x = build(family)
    model = copy.deepcopy(stock)
    assert condition_model(model, conditioning) is model
    assert [type(m) for m in model.modules()] == [type(m) for m in stock.modules()]
    assert torch.equal(model(x), stock(x))  # atol 0


@pytest.mark.slow
@pytest.mark.parametrize('family', MODELS)
def test_each_method_keeps_classes_and_stock_keys(family):
    stock, x = build(family)
    model = condition_model(copy.deepcopy(stock), ALL)
    n = len(layers(model, family))
    assert n > 0 and all(type(m) is ATTENTION[family] for m in layers(model, family))
    assert all(
        isinstance(m.qkv, SpectralLinear) and isinstance(m.proj, PreconditionedLinear)
        for m in layers(model, family))
    extra = set(model.state_dict()) - set(stock.state_dict()) - {'conditioning_state.record'}
    assert set(stock.state_dict()) <= set(model.state_dict())
    assert len(extra) == n and all(k.endswith('.qkv.correction') for k in extra)
    assert 'conditioning_state.record' in model.state_dict()  # what it is trained with
    assert 'token_conditioning' in dict(model.named_children())
    assert '(token_conditioning): PatchTokenConditioning' in str(model)
    out = model(x)
    assert out.shape == stock(x).shape and not torch.allclose(out, stock(x), atol=1e-4)
    # a stock checkpoint loads: only the corrections are missing
    res = model.load_state_dict(stock.state_dict(), strict=False)
    assert res.unexpected_keys == [] and set(res.missing_keys) == extra


@pytest.mark.parametrize('family', MODELS)
def test_precond_rows_entering_proj_have_unit_norm(family):
    """The rows the projection's matmul receives, recovered from its output: (y - b) W⁻ᵀ."""
    model, x = build(family, torch.float64)
    condition_model(model, dict(precond=dict(eps=1e-12)))  # eps: norms are ‖O‖ / (‖O‖ + eps)
    seen = []
    hooks = [
        m.proj.register_forward_hook(lambda mod, a, y: seen.append((mod, y)))
        for m in layers(model, family)
    ]
    model(x)
    for h in hooks:
        h.remove()
    assert len(seen) == len(layers(model, family))
    for proj, y in seen:
        rows = torch.linalg.solve(proj.weight, (y - proj.bias).mT).mT  # C·O, (..., N, heads·d)
        norms = rows.unflatten(-1, (proj.num_heads, -1)).norm(dim=-1)  # per (token, head)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['vit', 'swin', 'xcit'])
@pytest.mark.parametrize('spectral', [dict(mode='svd'), dict(lam=2., targets=('q', 'v'))])
def test_spectral_qkv_is_linear_with_w_plus_c_and_folds(family, spectral):
    model, x = build(family)
    condition_model(model, dict(spectral=spectral))
    seen = []
    for m in layers(model, family):
        m.qkv.register_forward_hook(lambda mod, a, y: seen.append((mod, a[0], y)))
    out = model(x)
    for qkv, inp, y in seen:
        c = spectral_correction(qkv.weight, **spectral)
        torch.testing.assert_close(y, F.linear(inp, qkv.weight + c, qkv.bias))
        if spectral.get('mode') == 'svd':
            kappa = condition_number((qkv.weight + c).unflatten(0, (3, -1)))
            assert (kappa <= 2 + 1e-4).all()
    folded = fold_conditioning(copy.deepcopy(model))
    assert not any(isinstance(m, SpectralLinear) for m in folded.modules())
    assert (folded(x) - out).norm() <= 1e-5 * out.norm()


@pytest.mark.parametrize('family,position', [('vit', 'before_pos_embed'),
                                             ('deit_distilled', 'after_pos_embed'),
                                             ('swin', 'before_pos_embed'),
                                             ('xcit', 'after_pos_embed')])
def test_tokens_are_conditioned_where_position_says(family, position):
    stock, x = build(family)
    x = 1. + 1e-2 * x  # nearly flat images: nearly equal, ill-conditioned tokens
    model = condition_model(copy.deepcopy(stock), dict(tokens=dict(position=position)))
    tc = model.token_conditioning
    got, want = {}, {}
    tc.register_forward_hook(lambda m, a, y: got.update(x=a[0], y=y))
    # the stock tokens at the same place: what the conditioner received
    place = stock.patch_embed if position == 'before_pos_embed' else stock.pos_drop
    if position == 'before_pos_embed':
        place.register_forward_hook(
            lambda m, a, y: want.update(x=(y[0] if isinstance(y, tuple) else y).flatten(1, -2)))
    else:
        place.register_forward_pre_hook(lambda m, a: want.update(x=a[0]))
    stock(x)
    model(x)
    # class + distillation tokens at DeiT's pos_drop; XCiT appends its class token later
    k = 2 if family == 'deit_distilled' else 0
    assert tc.num_extra_tokens == k
    assert torch.equal(got['x'], want['x'])  # (B, N, D): the stock tokens at that place
    assert torch.equal(got['y'][:, :k], want['x'][:, :k])  # class / distillation tokens
    assert (condition_number(got['y'][:, k:]) <= 2 + 1e-3).all()  # κ(X + C) <= 2
    assert (condition_number(want['x'][:, k:]) > 10).all()
    torch.testing.assert_close(got['y'][:, k:], condition_tokens(want['x'][:, k:]))


def test_auto_solver_is_svd_for_rank_deficient_patch_embeddings():
    """Swin embeds 4·4·3 = 48 values into 96 channels: its tokens have rank < 96 whatever the
    weights, so 'auto' takes svd there directly (the other solvers would hand every image to
    svd after their own work); ViT's 768 → 192 and XCiT's conv stem keep 'auto'."""
    from mmcondattn.conditioning import rank_deficient_embedding
    for family, deficient in (('swin', True), ('vit', False), ('xcit', False)):
        stock, x = build(family)
        assert rank_deficient_embedding(stock.patch_embed) == deficient
        model = condition_model(copy.deepcopy(stock), dict(tokens=dict()))
        conditioner = model.token_conditioning.conditioner
        assert conditioner.solver == ('svd' if deficient else 'auto')
        assert ('(auto: rank-deficient tokens)' in repr(model)) == deficient
        if deficient:  # the premise, measured: the stock tokens are numerically singular
            tokens = stock.patch_embed(x).flatten(1, 2)
            assert (condition_number(tokens) > 1e4).all()
            got = {}
            model.token_conditioning.register_forward_hook(lambda m, a, y: got.update(y=y))
            model(x)
            assert (condition_number(got['y']) <= 2 + 1e-3).all()
    # an explicit solver is kept, and after a position embedding the tokens have full rank
    swin = condition_model(build('swin')[0], dict(tokens=dict(solver='newton_schulz')))
    assert swin.token_conditioning.conditioner.solver == 'newton_schulz'
    deit = condition_model(build('vit')[0], dict(tokens=dict(position='after_pos_embed')))
    assert not deit.token_conditioning.conditioner.rank_deficient


def test_precond_refuses_timm_attention_with_a_norm_or_gate_before_proj():
    for kwargs, what in ((dict(scale_norm=True,
                               norm_layer=nn.LayerNorm), 'LayerNorm'), (dict(gated=True), 'gated')):
        model = nn.Sequential(Attention(16, num_heads=2, **kwargs))
        with pytest.raises(ConditioningConfigError, match=f'Attention cannot be precond.*{what}'):
            condition_model(model, dict(precond=dict(), spectral=dict()))
        assert not isinstance(model[0].qkv, SpectralLinear)  # nothing changed
        condition_model(model, dict(spectral=dict()))  # the qkv weight is still fine
        assert isinstance(model[0].qkv, SpectralLinear)


def test_unsupported_models_fail_naming_what_is_supported():
    with pytest.raises(
            ConditioningConfigError,
            match=r'none of the supported classes: .*timm.layers.attention.Attention'):
        condition_model(nn.Sequential(nn.Linear(4, 4)), dict(precond=dict()))
    with pytest.raises(
            ConditioningConfigError, match=r'no, supported backbone: .*timm.models.xcit.Xcit'):
        condition_model(nn.Sequential(Attention(16, num_heads=2)), dict(tokens=dict()))


@pytest.mark.slow
def test_conditioned_timm_backbone_from_an_mmpretrain_config():
    """Built from mmpretrain's registry (whatever default scope an earlier test left)."""
    from mmengine.registry import DefaultScope

    import mmcondattn.openmmlab  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        _timm_backbone_from_config()


def _timm_backbone_from_config():
    from mmpretrain.registry import MODELS
    cfg = dict(model_name='deit_tiny_patch16_224', img_size=32)
    torch.manual_seed(0)
    stock = MODELS.build(dict(type='TIMMBackbone', **cfg))
    stock.eval()  # the stock wrapper's train() returns None
    torch.manual_seed(0)
    off = MODELS.build(dict(type='ConditionedTIMMBackbone', **cfg)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(off(x)[0], stock(x)[0])
    model = MODELS.build(dict(type='ConditionedTIMMBackbone', **cfg, conditioning=ALL))
    assert model.conditioning.enabled and hasattr(model.timm_model, 'token_conditioning')
    qkv = model.timm_model.blocks[0].attn.qkv
    assert isinstance(qkv, SpectralLinear)
    before = qkv.weight.clone()
    model.init_weights()  # timm's own init runs: the svd corrections follow it
    assert not torch.equal(before, qkv.weight)
    torch.testing.assert_close(qkv.correction, spectral_correction(qkv.weight, 'svd'))
    assert model.eval()(x)[0].shape == stock(x)[0].shape
    # or the documented call on the stock wrapper: the timm model inside is conditioned
    condition_model(stock, ALL)
    assert isinstance(stock.timm_model.blocks[0].attn.proj, PreconditionedLinear)
    assert hasattr(stock.timm_model, 'token_conditioning')


@pytest.mark.parametrize('family', ['vit', 'swin', 'xcit'])
def test_record_attention_on_timm_layers(family):
    from mmcondattn.models.attention import attention_layers, record_attention
    model, x = build(family)
    condition_model(model, dict(precond=dict()))
    fused = [m.fused_attn for _, m in attention_layers(model)]
    with record_attention(model) as rec:
        model(x)
    assert len(rec) == len(layers(model, family)) and all('attn' in r for r in rec.values())
    for r in rec.values():
        torch.testing.assert_close(r['attn'].sum(-1), torch.ones(r['attn'].shape[:-1]))
        norms = r['out_cond'].norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-4, atol=0)
    assert [m.fused_attn for _, m in attention_layers(model)] == fused  # restored


def test_architecture_doc_example_runs():
    import os.path as osp
    import re

    from conftest import REPO
    text = open(osp.join(REPO, 'docs/architecture.md'), encoding='utf-8').read()
    code = re.search(r'<!-- doctest: condition-model -->\n```python\n(.*?)```', text, re.S)
    scope = {}
    exec(code.group(1), scope)
    assert scope['logits'].shape == (1, 1000)
    assert isinstance(scope['model'].blocks[0].attn.proj, PreconditionedLinear)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['vit', 'swin', 'xcit'])
def test_measure_conditioning_on_timm_models(family):
    from mmcondattn.models.probe import measure_conditioning
    model, x = build(family)
    x = 1. + 1e-2 * x  # nearly flat images: ill-conditioned tokens
    seen = {}
    model.patch_embed.register_forward_hook(lambda m, a, y: seen.update(
        x=(y[0] if isinstance(y, tuple) else y).flatten(1, -2)))  # (B, N, D), NHWC for Swin
    stock = measure_conditioning(model, x)
    kappa = condition_number(seen['x']).mean().item()
    assert stock['tokens']['kappa'] == pytest.approx(kappa, rel=1e-9) and kappa > 2.5
    condition_model(model, dict(spectral=dict(mode='svd'), tokens=dict()))
    cond = measure_conditioning(model, x)
    assert len(cond['layers']) == len(stock['layers']) == len(layers(model, family))
    assert all(row['kappa_wq'] <= 2 + 1e-4 for row in cond['layers'])
    assert cond['tokens']['kappa'] <= 2 + 1e-3
