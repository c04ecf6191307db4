"""The conditioning maths (mmcondattn.conditioning): plain PyTorch, tiny sizes."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcondattn.conditioning import (SpectralLinear, TokenConditioner, attention_entropy,
                                     condition_number, condition_tokens, fold_conditioning,
                                     min_singular_value, precondition, recompute_corrections,
                                     spectral_correction, token_correction)

SOLVERS = ('svd', 'gram', 'newton_schulz')
HYP = settings(max_examples=20, deadline=None, derandomize=True)


def ill_conditioned(n, d, kappa, rank=None, batch=(), seed=0, dtype=torch.float32):
    """Random (batch..., n, d) matrices with log-spaced singular values from 1 to 1/kappa;
    singular values past ``rank`` set to zero."""
    g = torch.Generator().manual_seed(seed)
    k = min(n, d)
    u = torch.linalg.qr(torch.randn(*batch, n, k, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(*batch, d, k, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -math.log10(kappa), k, dtype=torch.float64)
    if rank is not None:
        s[rank:] = 0
    return ((u * s) @ v.mT).to(dtype)


# --- numbers -------------------------------------------------------------------------------


def test_condition_number_matches_definition_and_is_batched():
    m = torch.randn(2, 3, 7, 5)
    s = torch.linalg.svdvals(m.double())
    kappa = condition_number(m)
    assert kappa.shape == (2, 3) and kappa.dtype == torch.float64
    torch.testing.assert_close(kappa, s[..., 0] / s[..., -1])
    torch.testing.assert_close(min_singular_value(m), s[..., -1])
    torch.testing.assert_close(
        condition_number(ill_conditioned(9, 6, 1e5)),
        torch.tensor(1e5, dtype=torch.float64),
        rtol=1e-3,
        atol=0)


def test_condition_number_of_singular_matrices_is_large_and_finite():
    rank2 = ill_conditioned(4, 4, 10, rank=2, dtype=torch.float64)
    m = torch.stack([torch.zeros(4, 4, dtype=torch.float64), rank2, torch.eye(4).double()])
    kappa = condition_number(m, floor=1e-10)
    assert torch.isfinite(kappa).all()
    assert kappa[0] == kappa[1] == 1e10  # the floor says "singular"
    assert kappa[2] == 1.0
    assert torch.isfinite(condition_number(torch.zeros(3, 5))).all()  # default floor


def test_attention_entropy():
    uniform = torch.full((2, 3, 5, 8), 1 / 8)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((2, 3), math.log(8)))
    one_hot = torch.eye(8)[None]  # 0 · log 0 = 0
    assert attention_entropy(one_hot, reduction='none').shape == (1, 8)
    assert attention_entropy(one_hot).abs().max() == 0


# --- precond -------------------------------------------------------------------------------


def unequal_rows(shape=(2, 3, 16, 8), seed=0):
    """Head outputs whose token rows have norms spread over four decades."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.logspace(-2, 2, shape[-2])[:, None]
    return torch.randn(*shape, generator=g) * rows


@pytest.mark.parametrize('scale', [1.0, 3.0])
def test_precondition_rows_have_norm_scale_and_kappa_drops(scale):
    out = unequal_rows()
    y = precondition(out, eps=1e-6, scale=scale)
    n = out.norm(dim=-1)
    torch.testing.assert_close(y.norm(dim=-1), scale * n / (n + 1e-6))  # = scale ± eps effects
    assert (condition_number(y) < condition_number(out) / 10).all()


def test_precondition_zero_rows_and_half_precision_are_finite():
    out = unequal_rows()
    out[..., 0, :] = 0
    for dtype in (torch.float16, torch.bfloat16):
        y = precondition(out.to(dtype))
        assert y.dtype == dtype and torch.isfinite(y).all()
        assert (y[..., 0, :] == 0).all()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.isfinite(precondition(out.bfloat16())).all()


@pytest.mark.parametrize('detach', [True, False])
def test_precondition_gradients(detach):
    out = unequal_rows().requires_grad_()
    up = unequal_rows(seed=1)
    # eps=0: the exact d(o/|o|) is orthogonal to o (eps=1e-6 tilts it by ~eps/|o|)
    (precondition(out, eps=0., detach=detach) * up).sum().backward()
    assert torch.isfinite(out.grad).all()
    c = 1 / out.detach().norm(dim=-1, keepdim=True)
    if detach:  # C is a constant
        torch.testing.assert_close(out.grad, c * up)
    else:  # d(o/|o|) = (up - (up·ô) ô) / |o|: orthogonal to the rows
        assert not torch.allclose(out.grad, c * up)
        cos = F.cosine_similarity(out.grad, out.detach(), dim=-1)
        assert cos.abs().max() < 1e-4


# --- spectral ------------------------------------------------------------------------------


@HYP
@given(
    d_out=st.integers(1, 12),
    d_in=st.integers(1, 12),
    log_kappa=st.floats(0, 8),
    seed=st.integers(0, 100))
@pytest.mark.slow
def test_spectral_svd_bounds_kappa_by_two(d_out, d_in, log_kappa, seed):
    w = torch.cat([ill_conditioned(d_out, d_in, 10**log_kappa, seed=seed + i) for i in range(3)])
    c = spectral_correction(w, mode='svd')
    assert c.shape == w.shape and c.dtype == w.dtype
    kappa = condition_number((w + c).view(3, d_out, d_in))
    assert (kappa <= 2 + 1e-4).all(), kappa


def test_spectral_svd_fixes_rank_deficient_blocks():
    w = torch.cat([ill_conditioned(8, 8, 10, rank=r) for r in (1, 4, 8)])
    kappa = condition_number((w + spectral_correction(w, 'svd')).view(3, 8, 8))
    assert (kappa <= 2 + 1e-4).all(), kappa


@pytest.mark.parametrize('d_out,d_in', [(6, 6), (4, 6), (6, 4)])
def test_spectral_identity_blocks_and_targets(d_out, d_in):
    w = torch.randn(3 * d_out, d_in)
    c = spectral_correction(w, 'identity', lam=2.5, targets=('q', 'v'))
    q, k, v = c.view(3, d_out, d_in)
    torch.testing.assert_close(q, 2.5 * torch.eye(d_out, d_in))
    assert (k == 0).all()
    torch.testing.assert_close(v, 2.5 * torch.eye(d_out, d_in))


@pytest.mark.parametrize('mode,targets,d_in', [('identity', ('q', 'k', 'v'), 6),
                                               ('identity', ('k', ), 6),
                                               ('identity', ('q', 'v'), 4),
                                               ('identity', ('q', 'k', 'v'), 9),
                                               ('svd', ('q', 'k', 'v'), 6), ('svd', ('v', ), 9)])
def test_spectral_linear_forward_is_linear_with_w_plus_c(mode, targets, d_in):
    lin = nn.Linear(d_in, 18)
    sl = SpectralLinear.from_linear(lin, dict(mode=mode, lam=3., targets=targets))
    assert sl.weight is lin.weight and sl.bias is lin.bias
    assert set(sl.state_dict()) == {'weight', 'bias', 'correction'}
    assert not sl.correction.requires_grad and 'correction' not in dict(sl.named_parameters())
    x = torch.randn(2, 5, d_in)
    want = F.linear(x, lin.weight + spectral_correction(lin.weight, mode, 3., targets), lin.bias)
    torch.testing.assert_close(sl(x), want)
    assert not torch.allclose(sl(x), lin(x))


def test_spectral_linear_gradients_reach_the_weight_only():
    for mode in ('identity', 'svd'):
        sl = SpectralLinear(6, 18, spectral=dict(mode=mode))
        x = torch.randn(2, 5, 6, requires_grad=True)
        sl(x).square().sum().backward()
        assert torch.isfinite(sl.weight.grad).all() and torch.isfinite(x.grad).all()
        assert sl.correction.grad is None


def _model(spectral, d=8):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(SpectralLinear(d, 3 * d, spectral=spectral), nn.GELU(), nn.Linear(3 * d, d)),
        SpectralLinear(d, 3 * d, bias=False, spectral=spectral))


@pytest.mark.parametrize('spectral', [dict(), dict(mode='svd'), dict(lam=1., targets=['k'])])
def test_fold_conditioning_gives_equal_outputs_and_stock_keys(spectral):
    model = _model(spectral)
    folded = fold_conditioning(copy.deepcopy(model))
    x = torch.randn(3, 4, 8)
    ref, out = model(x), folded(x)
    assert (out - ref).norm() <= 1e-5 * ref.norm()
    assert not any(isinstance(m, SpectralLinear) for m in folded.modules())
    assert not any('correction' in k for k in folded.state_dict())
    assert {k for k in model.state_dict() if 'correction' not in k} == set(folded.state_dict())
    assert type(fold_conditioning(SpectralLinear(4, 12))) is nn.Linear


def test_svd_correction_is_set_at_attach_and_init_never_in_forward():
    lin = nn.Linear(6, 18)
    sl = SpectralLinear.from_linear(lin, dict(mode='svd'))  # at attach: from lin's weights
    torch.testing.assert_close(sl.correction, spectral_correction(lin.weight, 'svd'))
    with torch.no_grad():
        nn.init.trunc_normal_(sl.weight, std=0.02)  # an init outside mmengine's chain
    c = sl.correction.clone()
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(sl(x), F.linear(x, sl.weight + c, sl.bias))  # forward: as set
    sl.state_dict()
    assert torch.equal(sl.correction, c)  # saving does not recompute either
    sl.init_weights()  # mmengine's init chain (after the weights' init): follows them
    torch.testing.assert_close(sl.correction, spectral_correction(sl.weight, 'svd'))
    with torch.no_grad():
        sl.weight.mul_(3.)  # a training step: the correction stays
    torch.testing.assert_close(sl(x), F.linear(x, sl.weight + sl.correction, sl.bias))
    assert not torch.allclose(sl.correction, spectral_correction(sl.weight, 'svd'))
    assert recompute_corrections(nn.Sequential(sl, SpectralLinear(6, 18))) == 1  # svd only
    torch.testing.assert_close(sl.correction, spectral_correction(sl.weight, 'svd'))


def test_identity_correction_is_a_read_only_property():
    sl = SpectralLinear(6, 18, spectral=dict(lam=2.))
    assert 'correction' not in dict(sl.named_buffers())  # not held in memory
    torch.testing.assert_close(sl.correction, spectral_correction(sl.weight, lam=2.))
    with pytest.raises(AttributeError):
        sl.correction = torch.zeros(18, 6)
    assert torch.equal(sl.state_dict()['correction'], sl.correction)


def test_svd_correction_reloads_exactly_and_follows_stock_checkpoints():
    trained = SpectralLinear(6, 18, spectral=dict(mode='svd'))
    sd = copy.deepcopy(trained.state_dict())
    with torch.no_grad():
        trained.weight.add_(1.)  # weights moved on after the corrections were set
    assert torch.equal(trained.correction, sd['correction'])
    assert not torch.allclose(spectral_correction(trained.weight, 'svd'), sd['correction'])

    fresh = SpectralLinear(6, 18, spectral=dict(mode='svd'))
    fresh.load_state_dict(trained.state_dict())  # a conditioned checkpoint: exact
    assert torch.equal(fresh.correction, sd['correction'])
    assert recompute_corrections(fresh) == 1  # on request: from the loaded weights
    torch.testing.assert_close(fresh.correction, spectral_correction(fresh.weight, 'svd'))

    stock = nn.Linear(6, 18).state_dict()  # a stock checkpoint: recomputed from its weights
    res = fresh.load_state_dict(stock, strict=False)
    assert res.missing_keys == ['correction']
    torch.testing.assert_close(fresh.correction, spectral_correction(stock['weight'], 'svd'))


def test_identity_correction_from_another_lam_loads_as_the_models_own():
    """The layer keeps its λ; the model's conditioning record reports the difference
    (tests/test_models/test_warm_start.py)."""
    sd = SpectralLinear(4, 12, spectral=dict(lam=1.)).state_dict()
    sl = SpectralLinear(4, 12, spectral=dict(lam=10.))
    sl.load_state_dict(sd)
    torch.testing.assert_close(sl.correction, spectral_correction(sl.weight, lam=10.))
    torch.testing.assert_close(sl.weight, sd['weight'])


# --- tokens --------------------------------------------------------------------------------


@HYP
@given(
    n=st.integers(2, 40),
    d=st.integers(2, 40),
    log_kappa=st.floats(0, 8),
    deficient=st.booleans(),
    seed=st.integers(0, 100),
    solver=st.sampled_from(['svd', 'gram']))
def test_svd_and_default_gram_tokens_bound_kappa_by_two(n, d, log_kappa, deficient, seed, solver):
    """Any X, rank-deficient included: gram hands those images to svd."""
    rank = max(1, min(n, d) // 2) if deficient else None
    x = ill_conditioned(n, d, 10**log_kappa, rank=rank, batch=(2, ), seed=seed)
    y = condition_tokens(x, solver=solver)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert (condition_number(y) <= 2 + 1e-3).all()


@pytest.mark.parametrize('solver', ['gram', 'newton_schulz'])
@pytest.mark.parametrize('shape', [(40, 12), (12, 40), (16, 16)])
@pytest.mark.parametrize('kappa', [1e1, 1e2, 1e4])
def test_gram_and_newton_schulz_tokens_bound_kappa_by_two(solver, shape, kappa):
    x = ill_conditioned(*shape, kappa, batch=(2, ))
    assert (condition_number(condition_tokens(x, solver=solver)) <= 2 + 1e-2).all()


@pytest.mark.parametrize('shape', [(48, 16), (16, 48)])
def test_gram_hands_only_rank_deficient_images_to_svd(shape):
    """A batch of a rank-deficient image (like Swin's 48→96 patch embedding) and a full-rank
    one: both reach κ <= 2; the full-rank one keeps its own float32 Gram result."""
    from mmcondattn.conditioning.token_solvers import correction_gram as _correction_gram
    full = ill_conditioned(*shape, 10, seed=1)
    x = torch.stack([ill_conditioned(*shape, 1e2, rank=8), full])
    c = token_correction(x, 'gram')
    assert (condition_number(x + c) <= 2 + 1e-3).all()
    assert torch.equal(c[1], _correction_gram(full))
    torch.testing.assert_close(c[0], token_correction(x[0], 'svd'))


@pytest.mark.parametrize('kappa,precision', [(10, torch.float32), (1e2, torch.float64),
                                             (1e8, None)])
def test_gram_uses_float32_only_where_its_eigenvalue_ratio_allows(kappa, precision):
    """κ(X) = 10: the float32 Gram result (ratio 1e-2 >= 1e-3); 1e2: float64 (ratio 1e-4);
    1e8: svd. Each stays within 1e-4 of the exact κ(X + C) = 2 / (1 + 1/κ(X))."""
    from mmcondattn.conditioning import token_solvers as tokens
    x = ill_conditioned(400, 48, kappa, seed=2)
    c = token_correction(x, 'gram')
    want = {
        torch.float32: lambda: tokens._gram_apply(x,
                                                  *tokens._gram_eig(x)[:2]),
        torch.float64: lambda: tokens.correction_gram64(x),
        None: lambda: tokens.correction_svd(x)
    }[precision]()
    assert torch.equal(c, want)
    assert condition_number(x + c) <= min(2 / (1 + 1 / kappa) + 1e-4, 2 + 1e-3)


def test_auto_solver_is_gram_on_cpu_and_newton_schulz_on_gpus():
    from mmcondattn.conditioning.token_solvers import resolve_solver
    assert resolve_solver('auto', torch.device('cpu')) == 'gram'
    assert resolve_solver('auto', 'cuda') == resolve_solver('newton_schulz', 'cpu')
    assert resolve_solver('auto', 'cuda') == 'newton_schulz'
    x = ill_conditioned(40, 12, 1e2, batch=(2, ))
    assert torch.equal(condition_tokens(x), condition_tokens(x, 'gram'))


def test_newton_schulz_schedule_converges_for_kappa_up_to_1e4():
    """The scalar map of the default 10 quintic steps, which is what they do to each singular
    value s of X / σ_max: |p(s) - 1| <= 1e-5 on [1e-4, 1.05] (σ_max may be underestimated
    a little), and s + p(s) within a factor 2 + 1e-4; the cubic iteration needs 26 steps."""
    from mmcondattn.conditioning.token_solvers import ns_schedule
    s = torch.cat([
        torch.logspace(-4, 0, 2000, dtype=torch.float64),
        torch.linspace(1, 1.05, 50, dtype=torch.float64)
    ])
    p = s.clone()
    for a, b, c in ns_schedule(10):
        p = a * p + b * p**3 + c * p**5
    assert (p - 1).abs().max() <= 1e-5
    f = s.clamp(max=1) + p
    assert f.max() / f.min() <= 2 + 1e-4
    cubic = s.clone()
    for _ in range(25):
        cubic = 1.5 * cubic - 0.5 * cubic**3
    assert (cubic - 1).abs().max() > 1e-3  # 25 cubic steps are not enough


def test_newton_schulz_hands_unconverged_images_to_svd():
    """A rank-deficient image (‖YᵀY − I‖ ≈ 1) goes to svd and reaches κ <= 2; the full-rank
    image of the batch keeps the Newton-Schulz result."""
    from mmcondattn.conditioning.token_solvers import _newton_schulz_polar
    full = ill_conditioned(48, 16, 1e2, seed=1)
    x = torch.stack([ill_conditioned(48, 16, 1e2, rank=8), full])
    c = token_correction(x, 'newton_schulz')
    assert (condition_number(x + c) <= 2 + 1e-3).all()
    smax, y, err = _newton_schulz_polar(full, 10)
    assert err <= 1e-4 and torch.equal(c[1], smax * y)
    torch.testing.assert_close(c[0], token_correction(x[0], 'svd'))


@pytest.mark.parametrize('shape', [(40, 12), (12, 40), (16, 16)])
def test_token_solvers_agree_on_full_rank_input(shape):
    x = ill_conditioned(*shape, 1e3, batch=(3, ), seed=3) * 5
    ref = condition_tokens(x, 'svd')
    for solver in ('gram', 'newton_schulz'):
        torch.testing.assert_close(condition_tokens(x, solver), ref, rtol=1e-3, atol=1e-3 * 5)


@pytest.mark.parametrize('solver', SOLVERS)
def test_degenerate_tokens_give_finite_output(solver):
    rank1 = torch.randn(2, 10, 1) @ torch.randn(2, 1, 6)
    for x in (torch.zeros(2, 10, 6), rank1, rank1.mT.contiguous()):
        y = condition_tokens(x, solver)
        assert torch.isfinite(y).all()
    assert torch.equal(condition_tokens(torch.zeros(1, 4, 3), solver), torch.zeros(1, 4, 3))


@pytest.mark.parametrize('solver', SOLVERS)
@pytest.mark.parametrize('detach', [True, False])
def test_token_gradients_are_finite(solver, detach):
    x = ill_conditioned(12, 8, 1e2, batch=(2, )).requires_grad_()
    up = torch.randn_like(x)
    (condition_tokens(x, solver, detach=detach) * up).sum().backward()
    assert torch.isfinite(x.grad).all()
    if detach:  # C is a constant
        assert torch.equal(x.grad, up)
    else:
        assert not torch.allclose(x.grad, up)


@pytest.mark.parametrize('solver', SOLVERS)
def test_tokens_under_bf16_autocast(solver):
    conv = nn.Conv2d(3, 8, 4, stride=4)  # patch embedding: bf16 under autocast
    with torch.autocast('cpu', dtype=torch.bfloat16):
        x = conv(torch.randn(2, 3, 16, 16)).flatten(2).mT  # (2, 16, 8)
        y = TokenConditioner(solver=solver)(x)
    assert x.dtype == y.dtype == torch.bfloat16 and y.shape == x.shape
    assert torch.isfinite(y).all()
    assert (condition_number(y) < condition_number(x)).all()


def test_token_conditioner_module():
    tc = TokenConditioner.from_cfg(dict(solver='svd', position='after_pos_embed'))
    assert list(tc.parameters()) == [] and tc.state_dict() == {}
    assert tc.position == 'after_pos_embed' and 'svd' in repr(tc)
    x = torch.randn(2, 9, 4)
    torch.testing.assert_close(tc(x), condition_tokens(x, 'svd'))
    assert TokenConditioner().cfg.solver == 'auto'


@pytest.mark.skipif(not hasattr(torch, 'cond'), reason='torch.cond (torch >= 2.2) needed')
@pytest.mark.parametrize('solver', ['gram', 'newton_schulz'])
def test_token_fallbacks_compile_without_graph_breaks(solver):
    """The data-dependent fallbacks (float64, svd) run through torch.cond when compiled: one
    graph (fullgraph=True), the eager result, on a batch that needs every fallback."""
    x = torch.stack([
        ill_conditioned(48, 16, 10),
        ill_conditioned(48, 16, 1e2, seed=1),
        ill_conditioned(48, 16, 10, rank=8, seed=2)
    ])
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x: condition_tokens(x, solver), backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(compiled(x), condition_tokens(x, solver), rtol=1e-5, atol=1e-5)
