"""The spectral options ``layout`` ('block' | 'per_head') and ``update`` ('once' |
'every_step'): the paper's other readings (docs/methods.md, 'Which reading is which')."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmcondattn.conditioning import (ConditioningConfigError, SpectralLinear, condition_number,
                                     fold_conditioning, parse_conditioning, spectral_correction)
from mmcondattn.conditioning.model import AttentionAdapter, condition_attention_layer
from mmcondattn.conditioning.options import SPECTRAL_LAYOUTS, SPECTRAL_UPDATES, describe

HEADS, D_HEAD = 4, 3  # D_out = 12 per block
D_OUT = HEADS * D_HEAD


def per_head_identity(d_in, lam, targets=('q', 'k', 'v'), heads=HEADS, d=D_HEAD):
    """C (3·heads·d, d_in) written out: row h·d + i of a targeted block gets lam at column i."""
    c = torch.zeros(3, heads, d, d_in)
    for b, t in enumerate('qkv'):
        if t in targets:
            for h in range(heads):
                for i in range(min(d, d_in)):
                    c[b, h, i, i] = lam
    return c.reshape(3 * heads * d, d_in)


def block_identity_output(x, lin, lam):
    """Today's default written out (as the code before the layout option did it): y = x Wᵀ + b,
    then each D_out block y_t[..., :k] += lam x."""
    y = F.linear(x, lin.weight, lin.bias)
    k = min(D_OUT, x.shape[-1])
    y.view(*y.shape[:-1], 3, D_OUT)[..., :k].add_(x[..., None, :k], alpha=lam)
    return y


def ill_conditioned(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -4, min(rows, cols), dtype=torch.float64)
    return (u[:, :len(s)] * s) @ v[:len(s)]


# --- options --------------------------------------------------------------------------------


def test_defaults_unchanged_and_choices_exported():
    s = parse_conditioning(dict(spectral=dict())).spectral
    assert (s.layout, s.update) == ('block', 'once')
    assert SPECTRAL_LAYOUTS == ('block', 'per_head') and SPECTRAL_UPDATES == ('once', 'every_step')
    assert describe(parse_conditioning(dict(spectral=dict())).methods()) == 'spectral'
    # the conditioning record (.state) of a default model reads as before these options
    assert parse_conditioning(dict(spectral=dict(layout='block', update='once'))).methods() == \
        dict(spectral=dict(mode='identity', lam=10.0, targets=('q', 'k', 'v')))
    per_head = parse_conditioning(dict(spectral=dict(layout='per_head')))
    assert per_head.methods()['spectral']['layout'] == 'per_head'
    assert parse_conditioning(per_head.to_dict()) == per_head
    assert str(parse_conditioning(dict(spectral=dict(layout='per_head')))) == \
        'spectral(layout=per_head)'


def test_default_output_and_state_dict_equal_todays_block_identity():
    torch.manual_seed(0)
    lin = nn.Linear(16, 3 * D_OUT)
    x = torch.randn(2, 5, 16)
    for sl in (SpectralLinear.from_linear(lin), SpectralLinear.from_linear(lin, num_heads=HEADS),
               SpectralLinear.from_linear(lin, dict(layout='block'), num_heads=HEADS)):
        assert torch.equal(sl(x), block_identity_output(x, lin, 10.))
        sd = sl.state_dict()
        assert list(sd) == ['weight', 'bias', 'correction']
        assert torch.equal(sd['correction'], 10. * torch.eye(D_OUT, 16).repeat(3, 1))
        assert 'layout' not in repr(sl) and 'update' not in repr(sl)


@pytest.mark.parametrize('spectral,message', [
    (dict(layout='perhead'), "conditioning.spectral.layout: unknown value 'perhead' (did you mean "
     "'per_head'?); valid: 'block', 'per_head'"),
    (dict(mode='svd', update='every-step'), "conditioning.spectral.update: unknown value "
     "'every-step' (did you mean 'every_step'?); valid: 'once', 'every_step'"),
    (dict(update='every_step'), "conditioning.spectral: update='every_step' recomputes the svd "
     "correction from the weights, but mode='identity' (lam·I) does not depend on them; use "
     "mode='svd' or update='once'"),
])
def test_bad_values_are_one_line(spectral, message):
    with pytest.raises(ConditioningConfigError) as e:
        parse_conditioning(dict(spectral=spectral))
    assert str(e.value) == message


def test_per_head_needs_num_heads_dividing_d_out():
    with pytest.raises(ValueError, match='needs num_heads'):
        SpectralLinear(8, 3 * D_OUT, spectral=dict(layout='per_head'))
    with pytest.raises(ValueError, match='not a multiple of num_heads 5'):
        SpectralLinear(8, 3 * D_OUT, spectral=dict(layout='per_head'), num_heads=5)
    with pytest.raises(ValueError, match='needs num_heads'):
        spectral_correction(torch.randn(3 * D_OUT, 8), layout='per_head')


def test_condition_attention_layer_passes_the_heads():

    class Attn(nn.Module):

        def __init__(self):
            super().__init__()
            self.num_heads = HEADS
            self.qkv, self.proj = nn.Linear(8, 3 * D_OUT), nn.Linear(D_OUT, 8)

    layer = Attn()
    condition_attention_layer(layer, dict(spectral=dict(layout='per_head', lam=2.)),
                              AttentionAdapter())
    assert layer.qkv.num_heads == HEADS and 'layout=per_head, num_heads=4' in repr(layer.qkv)
    torch.testing.assert_close(layer.qkv.correction, per_head_identity(8, 2.), rtol=0, atol=0)


# --- per_head -------------------------------------------------------------------------------


@pytest.mark.parametrize('d_in,targets', [(16, ('q', 'k', 'v')), (16, ('k', )), (2, ('q', 'v')),
                                          (3, ('q', 'k', 'v'))])
@pytest.mark.parametrize('strength', [1.0, 0.5])
def test_per_head_identity_equals_the_explicit_form_forward_and_backward(d_in, targets, strength):
    torch.manual_seed(1)
    lin = nn.Linear(d_in, 3 * D_OUT)
    sl = SpectralLinear.from_linear(lin, dict(lam=3., targets=targets, layout='per_head'), HEADS)
    sl.strength = strength
    c = per_head_identity(d_in, 3., targets)
    torch.testing.assert_close(sl.correction, c, rtol=0, atol=0)
    torch.testing.assert_close(
        spectral_correction(lin.weight, 'identity', 3., targets, 'per_head', num_heads=HEADS), c)
    x = torch.randn(2, 5, d_in, requires_grad=True)
    up = torch.randn(2, 5, 3 * D_OUT)
    out = sl(x)
    (out * up).sum().backward()
    got = x.grad, lin.weight.grad, lin.bias.grad
    x.grad = lin.weight.grad = lin.bias.grad = None
    want = F.linear(x, lin.weight + strength * c, lin.bias)
    (want * up).sum().backward()
    torch.testing.assert_close(out, want)
    for g, w in zip(got, (x.grad, lin.weight.grad, lin.bias.grad)):
        torch.testing.assert_close(g, w)
    with torch.no_grad():  # the no-autograd path
        torch.testing.assert_close(sl(x), want)


def test_per_head_svd_bounds_kappa_by_two_per_head():
    w = torch.cat([ill_conditioned(D_OUT, 16, seed) for seed in range(3)]).float()
    lin = nn.Linear(16, 3 * D_OUT)
    with torch.no_grad():
        lin.weight.copy_(w)
    sl = SpectralLinear.from_linear(lin, dict(mode='svd', layout='per_head'), HEADS)
    heads = (w + sl.correction).view(3 * HEADS, D_HEAD, 16)
    assert condition_number(w.view(3 * HEADS, D_HEAD, 16)).max() > 10
    assert (condition_number(heads) <= 2 + 1e-5).all()
    for h in range(3 * HEADS):  # σ_max(W_h)·U_h V_hᵀ, head by head
        u, s, vh = torch.linalg.svd(w.double().view(3 * HEADS, D_HEAD, 16)[h], full_matrices=False)
        torch.testing.assert_close(
            sl.correction.view(3 * HEADS, D_HEAD, 16)[h], (s[0] * u @ vh).float())
    x = torch.randn(3, 16)
    torch.testing.assert_close(sl(x), F.linear(x, w + sl.correction, lin.bias))


@pytest.mark.parametrize('spectral', [
    dict(layout='per_head', lam=2.),
    dict(mode='svd', layout='per_head'),
    dict(mode='svd', layout='per_head', update='every_step')
])
def test_per_head_folds_at_half_strength(spectral):
    torch.manual_seed(2)
    model = nn.Sequential(
        SpectralLinear(8, 3 * D_OUT, spectral=spectral, num_heads=HEADS), nn.GELU(),
        nn.Linear(3 * D_OUT, 8)).eval()
    model[0].strength = 0.5
    x = torch.randn(3, 4, 8)
    with torch.no_grad():
        ref = model(x)
        folded = fold_conditioning(copy.deepcopy(model))
        assert type(folded[0]) is nn.Linear
        torch.testing.assert_close(folded(x), ref)
        c = per_head_identity(8, 2.) if spectral['layout'] == 'per_head' and 'mode' not in \
            spectral else model[0].correction
        torch.testing.assert_close(folded[0].weight, model[0].weight + 0.5 * c)


@pytest.mark.parametrize('spectral', [
    dict(layout='per_head'),
    dict(mode='svd', layout='per_head', update='every_step'),
    dict(mode='svd', update='every_step')
])
def test_strength_zero_is_the_stock_linear(spectral):
    torch.manual_seed(3)
    lin = nn.Linear(8, 3 * D_OUT)
    sl = SpectralLinear.from_linear(copy.deepcopy(lin), spectral, num_heads=HEADS).train()
    sl.strength = 0.0
    x = torch.randn(2, 8, requires_grad=True)
    assert torch.equal(sl(x), lin(x))


# --- every_step -----------------------------------------------------------------------------


def _kappas(sl):
    w = (sl.weight + sl.correction).detach()
    groups = 3 * sl.groups
    return condition_number(w.view(groups, -1, w.shape[1]))


@pytest.mark.parametrize('layout', ['block', 'per_head'])
def test_every_step_keeps_kappa_at_most_two_after_every_optimiser_step(layout):
    torch.manual_seed(4)
    model = nn.Sequential(
        SpectralLinear(
            16,
            3 * D_OUT,
            spectral=dict(mode='svd', update='every_step', layout=layout),
            num_heads=HEADS), nn.Tanh(), nn.Linear(3 * D_OUT, 4))
    sl = model[0]
    with torch.no_grad():  # start ill-conditioned; a large lr moves W far
        sl.weight.copy_(torch.cat([ill_conditioned(D_OUT, 16, s) for s in range(3)]).float())
        sl.recompute_correction()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    x, target = torch.randn(32, 16), torch.randn(32, 4)
    loss = F.mse_loss(model(x), target)
    for step in range(3):
        opt.zero_grad()
        loss.backward()
        opt.step()  # W moved: the correction is now stale ...
        stale = sl.correction.clone()
        with torch.no_grad():
            model.eval()(x)  # ... and stays so in eval / no-grad forwards
        assert torch.equal(sl.correction, stale)
        loss = F.mse_loss(model.train()(x), target)  # the next training forward recomputes
        assert not torch.allclose(sl.correction, stale)
        torch.testing.assert_close(
            sl.correction, spectral_correction(sl.weight, 'svd', layout=layout, num_heads=HEADS))
        kappa = _kappas(sl)
        assert kappa.shape == (3 * (HEADS if layout == 'per_head' else 1), )
        assert (kappa <= 2 + 1e-6).all(), (step, kappa)


def test_once_never_recomputes_in_forward():
    sl = SpectralLinear(
        8, 3 * D_OUT, spectral=dict(mode='svd', layout='per_head'), num_heads=HEADS).train()
    c = sl.correction.clone()
    with torch.no_grad():
        sl.weight.mul_(3.)
    sl(torch.randn(2, 8, requires_grad=True)).sum().backward()
    assert torch.equal(sl.correction, c)
