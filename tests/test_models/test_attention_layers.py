"""Conditioned attention layers against their stock mmpretrain / mmdet layers (tiny sizes)."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.backbones.swin import WindowMSA as DetWindowMSA
from mmdet.registry import MODELS as MMDET_MODELS
from mmpretrain.models.backbones.xcit import XCA
from mmpretrain.models.utils.attention import MultiheadAttention, WindowMSA
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from mmcondattn.conditioning import (PreconditionedLinear, SpectralLinear, condition_number,
                                     fold_conditioning, spectral_correction)
from mmcondattn.models.attention import (ConditionedDetWindowMSA, ConditionedMultiheadAttention,
                                         ConditionedWindowMSA, ConditionedXCA,
                                         condition_attention_modules, record_attention)

D, HEADS = 16, 2
WIN = (2, 2)  # 4 tokens per window


def window_mask():
    """A Swin shift mask (nW=2, 4, 4) with -100 outside each token's region."""
    mask = torch.zeros(2, 4, 4)
    mask[1, :2, 2:] = mask[1, 2:, :2] = -100.
    return mask


# name: (stock class, conditioned class, constructor kwargs, input, forward kwargs)
LAYERS = {
    'mha':
    (MultiheadAttention, ConditionedMultiheadAttention, dict(embed_dims=D,
                                                             num_heads=HEADS), (2, 5, D), {}),
    'mha_rect': (MultiheadAttention, ConditionedMultiheadAttention,
                 dict(embed_dims=D, num_heads=HEADS, input_dims=24), (2, 5, 24), {}),
    'window':
    (WindowMSA, ConditionedWindowMSA, dict(embed_dims=D, window_size=WIN,
                                           num_heads=HEADS), (4, 4, D), {}),
    'window_masked': (WindowMSA, ConditionedWindowMSA,
                      dict(embed_dims=D, window_size=WIN,
                           num_heads=HEADS), (4, 4, D), dict(mask=window_mask())),
    'det_window': (DetWindowMSA, ConditionedDetWindowMSA,
                   dict(embed_dims=D, num_heads=HEADS,
                        window_size=WIN), (4, 4, D), dict(mask=window_mask())),
    'xca': (XCA, ConditionedXCA, dict(dim=D, num_heads=HEADS, qkv_bias=True), (2, 5, D), {}),
}
METHODS = {
    'precond': dict(precond=dict()),
    'spectral_identity': dict(spectral=dict(lam=1.)),
    'spectral_svd': dict(spectral=dict(mode='svd')),
    'spectral_q': dict(spectral=dict(lam=2., targets=('q', ))),
    'all': dict(precond=dict(scale=2., detach=False), spectral=dict(mode='svd'), tokens=dict()),
}


def randomize(module, seed=0):
    """Random parameters everywhere (the stock init leaves position biases at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def build(name, conditioning='stock'):
    stock_cls, cond_cls, kwargs, shape, fwd = LAYERS[name]
    if conditioning == 'stock':
        layer = stock_cls(**kwargs)
    else:
        layer = cond_cls(**kwargs, conditioning=conditioning)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    return layer, x, fwd


def stock_and_conditioned(name, conditioning):
    stock, x, fwd = build(name)
    randomize(stock)
    cond, _, _ = build(name, conditioning)
    res = cond.load_state_dict(stock.state_dict(), strict=False)
    assert res.unexpected_keys == []
    assert set(res.missing_keys) <= {'qkv.correction'}
    return stock, cond.eval(), x, fwd


@pytest.mark.parametrize('name', LAYERS)
def test_conditioning_off_equals_stock(name):
    stock, cond, x, fwd = stock_and_conditioned(name, None)
    assert isinstance(cond, type(stock)) and not cond.conditioning.enabled
    assert list(cond.state_dict()) == list(stock.state_dict())
    assert torch.equal(cond(x, **fwd), stock(x, **fwd))


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('name', LAYERS)
def test_each_method_changes_the_output_and_adds_only_corrections(name, method):
    stock, cond, x, fwd = stock_and_conditioned(name, METHODS[method])
    extra = set(cond.state_dict()) - set(stock.state_dict())
    assert set(stock.state_dict()) <= set(cond.state_dict())
    assert extra == ({'qkv.correction'} if 'spectral' in METHODS[method] else set())
    out = cond(x, **fwd)
    assert out.shape == stock(x, **fwd).shape and torch.isfinite(out).all()
    assert not torch.allclose(out, stock(x, **fwd), atol=1e-4)


@pytest.mark.parametrize('name', ['mha', 'window_masked', 'det_window', 'xca'])
def test_conversion_in_place_keeps_parameters(name):
    stock, x, fwd = build(name)
    randomize(stock)
    ref, _, _ = build(name, METHODS['all'])
    ref.load_state_dict(stock.state_dict(), strict=False)
    params = {k: id(p) for k, p in stock.named_parameters()}
    model = nn.Sequential(nn.Identity(), stock)
    assert condition_attention_modules(model, METHODS['all']) == 1
    assert type(stock) is LAYERS[name][0]  # composition: the class stays, children change
    assert {k: id(p) for k, p in stock.named_parameters()} == params
    assert isinstance(stock.qkv, SpectralLinear) and isinstance(stock.proj, PreconditionedLinear)
    torch.testing.assert_close(stock.eval()(x, **fwd), ref.eval()(x, **fwd))
    # already conditioned layers, and configs without layer methods, convert nothing
    assert condition_attention_modules(model, METHODS['all']) == 0
    assert condition_attention_modules(build(name)[0], dict(tokens=dict())) == 0
    assert condition_attention_modules(build(name)[0], None) == 0


def test_layer_methods_on_a_model_without_attention_fail_naming_the_supported_classes():
    model = nn.Sequential(nn.Linear(4, 12), nn.Linear(12, 4))
    for method in ('precond', 'spectral_svd'):
        with pytest.raises(
                ValueError,
                match=r'Sequential has none of the supported classes: '
                r'.*MultiheadAttention.*WindowMSA.*XCA'):
            condition_attention_modules(model, METHODS[method])
    assert not any(isinstance(m, SpectralLinear) for m in model.modules())


def test_precond_in_mha_scales_each_head_after_sdpa():
    stock, cond, x, _ = stock_and_conditioned('mha', dict(precond=dict(scale=2.)))
    q, k, v = stock.qkv(x).unflatten(-1, (3, HEADS, D // HEADS)).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
    o = 2. * o / (o.norm(dim=-1, keepdim=True) + 1e-6)
    want = stock.proj(o.transpose(1, 2).flatten(2))
    torch.testing.assert_close(cond(x), want)


def test_precond_in_xca_normalises_channels_per_token():
    stock, cond, x, _ = stock_and_conditioned('xca', dict(precond=dict()))
    q, k, v = stock.qkv(x).unflatten(-1, (3, HEADS, D // HEADS)).permute(2, 0, 3, 4, 1)
    attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).mT * stock.temperature).softmax(-1)
    o = attn @ v  # (B, heads, d, N): token rows are columns here
    o = o / (o.norm(dim=-2, keepdim=True) + 1e-6)
    torch.testing.assert_close(cond(x), stock.proj(o.permute(0, 3, 1, 2).flatten(2)))


@pytest.mark.parametrize('method', ['precond', 'spectral_identity', 'spectral_svd', 'all'])
@pytest.mark.parametrize('name', ['mha', 'window_masked', 'det_window', 'xca'])
def test_gradients_and_bf16_autocast(name, method):
    _, cond, x, fwd = stock_and_conditioned(name, METHODS[method])
    cond.train()
    x = x.clone().requires_grad_()
    cond(x, **fwd).square().mean().backward()
    grads = [p.grad for p in cond.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(x.grad).all()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.isfinite(cond(x, **fwd)).all()
        assert torch.isfinite(cond(torch.zeros_like(x), **fwd)).all()


def test_spectral_svd_follows_mmengine_init():
    layer = ConditionedMultiheadAttention(
        embed_dims=D,
        num_heads=HEADS,
        conditioning=METHODS['spectral_svd'],
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.5))
    before = layer.qkv.weight.clone()
    layer.init_weights()  # re-initialises qkv (a Linear by its bases), then its correction
    assert not torch.equal(before, layer.qkv.weight)
    torch.testing.assert_close(layer.qkv.correction, spectral_correction(layer.qkv.weight, 'svd'))
    kappa = condition_number(layer.qkv.effective_weight().view(3, D, D))
    assert (kappa <= 2 + 1e-4).all()


@pytest.mark.parametrize('registry', [MMDET_MODELS, MMPRETRAIN_MODELS])
def test_registered_in_both_registries(registry):
    layer = registry.build(
        dict(
            type='ConditionedXCA',
            dim=D,
            num_heads=HEADS,
            conditioning=dict(precond=dict(eps=1e-5))))
    assert isinstance(layer, ConditionedXCA) and layer.proj.precond.eps == 1e-5
    for cls in (ConditionedMultiheadAttention, ConditionedWindowMSA, ConditionedDetWindowMSA):
        assert registry.get(cls.__name__) is cls


def test_bad_conditioning_fails_at_build():
    with pytest.raises(ValueError, match="'svd'"):
        ConditionedXCA(dim=D, num_heads=HEADS, conditioning=dict(spectral=dict(mode='SVD')))


def test_fold_conditioned_layers():
    model = nn.ModuleList([build(n, METHODS['all'])[0] for n in ('mha', 'xca', 'det_window')])
    randomize(model)
    folded = fold_conditioning(copy.deepcopy(model))
    for name, a, b in zip(('mha', 'xca', 'det_window'), model, folded):
        _, x, fwd = build(name)
        ref = a(x, **fwd)
        assert (b(x, **fwd) - ref).norm() <= 1e-5 * ref.norm()
        assert b.conditioning.spectral is None and b.conditioning.precond is not None
    assert not any('correction' in k for k in folded.state_dict())


def test_record_attention_on_stock_and_conditioned_layers():
    names = ('mha', 'window_masked', 'xca')
    model = nn.ModuleList([build(n)[0] for n in names[:2]] + [build('xca', METHODS['all'])[0]])
    randomize(model)
    with record_attention(model) as rec:
        for name, layer in zip(names, model):
            _, x, fwd = build(name)
            layer(x, **fwd)
    n_tok = {'mha': 5, 'window_masked': 4, 'xca': D // HEADS}  # XCA: channel attention
    for i, name in enumerate(names):
        a, o = rec[str(i)]['attn'], rec[str(i)]['out']
        assert a.shape[-3:] == (HEADS, n_tok[name], n_tok[name])
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
        assert o.shape[1] == HEADS and o.shape[-1] == D // HEADS
    torch.testing.assert_close(
        rec['2']['out_cond'].norm(dim=-1) / 2,
        torch.ones(rec['2']['out'].shape[:-1]),
        rtol=1e-4,
        atol=0)
    # MHA: the recorded A reproduces the fused output
    mha = model[0]
    _, x, _ = build('mha')
    v = mha.qkv(x).unflatten(-1, (3, HEADS, D // HEADS)).permute(2, 0, 3, 1, 4)[2]
    torch.testing.assert_close(rec['0']['attn'] @ v, rec['0']['out'])
    assert not mha.qkv._forward_hooks and not mha.proj._forward_pre_hooks  # removed on exit
