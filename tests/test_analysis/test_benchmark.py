"""The benchmark tool (tiny sizes; it measures, nothing here asserts speed) and the optimised
paths of the three methods against their plain reference implementations."""
import copy
import datetime
import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import REPO, run_tool

import mmcondattn.openmmlab  # noqa: F401  registers the backbones
from mmcondattn.analysis.benchmark import (FAMILIES, METHODS, BenchmarkSettings, Row,
                                           bench_backbone, bench_detectors, render_markdown)
from mmcondattn.analysis.report import write_markdown
from mmcondattn.analysis.timing import Timing, peak_memory, time_alternating
from mmcondattn.conditioning import (PreconditionedLinear, SpectralLinear, condition_number,
                                     condition_tokens, precondition, spectral_correction)

TOOL = 'tools/analysis_tools/benchmark_conditioning.py'
BEGIN, END = '<!-- benchmark:begin -->', '<!-- benchmark:end -->'


def table(text, first_cell, after=''):
    """Rows (lists of cells) of the first markdown table whose header starts with
    ``first_cell``, after the first line that contains ``after``."""
    lines = text.splitlines()
    begin = next(i for i, line in enumerate(lines) if after in line)
    start = next(i for i, line in enumerate(lines)
                 if i >= begin and line.startswith(f'| {first_cell} |'))
    rows = []
    for line in lines[start:]:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip().strip('|').split('|')])
    header, rule, body = rows[0], rows[1], rows[2:]
    assert all(re.fullmatch(r'-{3,}', c) for c in rule) and len(rule) == len(header)
    assert all(len(r) == len(header) for r in body)
    return header, body


@pytest.mark.e2e
def test_tool_writes_a_markdown_table(tmp_path):
    out = tmp_path / 'bench.md'
    args = [
        TOOL, '--tiny', '--sizes', 'cls', '--no-detector', '--repeats', '1', '--warmup', '0',
        '--device', 'cpu', '--out',
        str(out)
    ]
    res = run_tool(args, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert '[21/21]' in res.stdout  # progress, one line per row (3 families × 7 presets)
    text = out.read_text()
    # header: command line, machine, torch version, load averages
    assert 'benchmark_conditioning.py --tiny --sizes cls --no-detector' in text
    assert f'torch {torch.__version__}' in text and 'cores' in text
    assert re.search(r'load average .* at start [\d.]+ / [\d.]+ / [\d.]+', text)

    header, body = table(text, 'family')
    assert [r[:3] for r in body] == [[f, 'cls', m] for f in FAMILIES for m in METHODS]
    for col in ('train ratio', 'infer ratio', 'peak ratio'):
        ratios = [float(r[header.index(col)]) for r in body]
        assert all(math.isfinite(v) and v > 0 for v in ratios)
    peaks = [float(r[header.index('peak plain MiB')]) for r in body]
    assert all(p > 0 for p in peaks)

    # the attention layers alone: the methods that live in layers, input as in the backbone
    header, body = table(text, 'family', after='attention layer alone')
    layer_methods = [m for m in METHODS if m != 'tokens']
    assert [r[:3] for r in body] == [[f, 'cls', m] for f in FAMILIES for m in layer_methods]
    for r in body:
        q1, q3 = map(float, r[header.index('train ratio IQR')].split('-'))
        assert 0 < q1 <= float(r[header.index('train ratio')]) <= q3
    assert {r[header.index('input')] for r in body if r[0] == 'vit'} == {'4×5×64'}

    header, body = table(text, 'family | size | X')
    assert len(body) == 3 and 'gram ms' in header
    for r in body:  # the svd solver keeps its promise on real tokens, all on the κ = 1e4 ones
        assert float(r[header.index('svd κ(X+C)')]) <= 2.01
        assert all(float(r[i]) <= 2.05 for i, h in enumerate(header) if h.endswith('=1e4'))


def test_compile_times_compiled_twins_and_says_so(monkeypatch):
    """``compile``: both twins of the backbone and the layer rows go through torch.compile
    (with the settings' backend; the cheap ``eager`` one here), compiled during a warm-up
    even with ``warmup=0``; the tables and log lines say that they are compiled."""
    from mmcondattn.analysis.benchmark import run_benchmark
    try:
        torch.compile(lambda t: t + 1, backend='eager')(torch.zeros(1))
    except Exception as e:  # no torch.compile / dynamo for this torch and Python
        pytest.skip(f'torch.compile unsupported by torch {torch.__version__} here: {e}')
    compiled, real = [], torch.compile

    def spy(model, **kwargs):
        compiled.append((type(model).__name__, kwargs))
        return real(model, **kwargs)

    monkeypatch.setattr(torch, 'compile', spy)
    s = BenchmarkSettings(
        families=['vit'],
        methods=['precond'],
        sizes=['cls'],
        tiny=True,
        repeats=1,
        warmup=0,
        solvers=False,
        compile=True,
        compile_backend='eager')
    assert s.twin_warmup == 1
    logs = []
    result = run_benchmark(s, log=logs.append)
    assert compiled == [('ConditionedViT', dict(backend='eager'))] * 2 + \
        [('MultiheadAttention', dict(backend='eager'))] * 2
    assert [r.label
            for r in result['backbones'] + result['layers']] == [('vit', 'cls', 'precond')] * 2
    assert all(
        line.startswith(('[1/1] vit cls precond (compiled):',
                         '[layer] vit cls precond (compiled):')) for line in logs)
    text = render_markdown(result, 'python tool --compile')
    assert 'Backbones, compiled (`torch.compile`, backend eager):' in text
    assert '- compiled (`torch.compile`, backend eager): both twins' in text
    header, body = table(text, 'family')
    assert [r[:3] for r in body] == [['vit', 'cls', 'precond']]
    assert all(float(r[header.index(c)]) > 0 for r in body for c in ('train ratio', 'peak ratio'))
    header, body = table(
        text,
        'family',
        after='Compiled (`torch.compile`, backend eager): the '
        'first attention layer alone')
    assert [r[:3] for r in body] == [['vit', 'cls', 'precond']]
    off = BenchmarkSettings(tiny=True)
    assert not off.compile and off.twin_warmup == off.warmup
    linear = nn.Linear(2, 2)
    assert off.maybe_compile(linear)[0] is linear  # off: the models themselves


def test_tool_compile_flag_and_its_markers(tmp_path):
    """--compile sets the settings (backend inductor unless --compile-backend) and writes
    between the benchmark-compiled markers; a document with only the eager markers is
    refused, not overwritten whole."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('benchmark_tool', f'{REPO}/{TOOL}')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args, s = tool.parse_args(['--tiny', '--compile'])
    assert s.compile and s.compile_backend == 'inductor' and tool.out_tag(args.compile) == \
        'benchmark-compiled'
    args, s = tool.parse_args(['--tiny', '--compile-backend', 'aot_eager'])
    assert not s.compile and tool.out_tag(args.compile) == 'benchmark'
    doc = tmp_path / 'performance.md'
    doc.write_text(f'# Performance\n{BEGIN}\neager table\n{END}\n')
    with pytest.raises(SystemExit) as e:
        tool.parse_args(['--compile', '--out', str(doc)])
    assert e.value.code == 2
    doc.write_text(f'{BEGIN}\neager\n{END}\n<!-- benchmark-compiled:begin -->\n'
                   '<!-- benchmark-compiled:end -->\n')
    args, _ = tool.parse_args(['--compile', '--out', str(doc)])
    write_markdown(str(doc), '| compiled |', tag=tool.out_tag(args.compile))
    assert doc.read_text() == (f'{BEGIN}\neager\n{END}\n<!-- benchmark-compiled:begin -->\n'
                               '| compiled |\n<!-- benchmark-compiled:end -->\n')


@pytest.mark.parametrize('args,bad', [(['--families', 'vit', 'resnet'], "'resnet'"),
                                      (['--methods', 'precondition'], "'precondition'"),
                                      (['--img-size', 'seg=64'], "'seg'")])
@pytest.mark.e2e
def test_bad_choices_get_one_error_listing_the_valid_ones(args, bad, tmp_path):
    res = run_tool([TOOL, *args], cwd=tmp_path)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()[-1]
    assert bad in err and 'valid:' in err
    valid = {'--families': FAMILIES, '--methods': METHODS, '--img-size': ('cls', 'det')}[args[0]]
    assert all(v in err for v in valid)


def test_write_markdown_keeps_prose_around_the_markers(tmp_path):
    doc = tmp_path / 'performance.md'
    doc.write_text(f'# Performance\nprose\n{BEGIN}\nold table\n{END}\nmore prose\n')
    write_markdown(str(doc), '| new | table |')
    assert doc.read_text() == (f'# Performance\nprose\n{BEGIN}\n| new | table |\n{END}\n'
                               'more prose\n')
    plain = tmp_path / 'new' / 'bench.md'
    write_markdown(str(plain), '| t |')
    assert plain.read_text() == '| t |\n'


def test_time_alternating_warms_up_then_alternates():
    calls = []
    timing = time_alternating(['a', 'b'],
                              calls.append,
                              warmup=2,
                              repeats=4,
                              device=torch.device('cpu'))
    assert calls == ['a', 'a', 'b', 'b'] + ['a', 'b', 'b', 'a'] * 2
    assert [len(t) for t in timing.samples] == [4, 4]
    assert all(t > 0 for t in timing.samples[0] + timing.samples[1])


def test_timing_ratios_pair_the_rounds():
    """A drift that slows both models alike cancels in the paired ratio; quartiles bracket."""
    drift = [1., 2., 4., 8., 16.]
    timing = Timing([drift, [1.1 * d for d in drift]])
    assert timing.ratio() == pytest.approx(1.1) and timing.median(1) == pytest.approx(4.4)
    assert timing.ratio_iqr() == pytest.approx((1.1, 1.1))
    noisy = Timing([[1.] * 5, [0.9, 1.0, 1.1, 1.2, 1.3]])
    assert noisy.ratio() == pytest.approx(1.1) and noisy.ratio_iqr() == pytest.approx((1.0, 1.2))
    assert Timing([[1., 2.], [3., 4.], [2., 6.]]).pair(2).ratios() == [2., 3.]


@pytest.mark.slow
def test_cpu_peak_memory_sees_the_allocator():
    """State bytes + the largest growth: a 4 MiB temporary on top of a kept 1 MiB result."""
    model = nn.Linear(256, 256)  # 257 KiB of parameters, no gradients in this step
    mib = 2**20

    def step(m):
        tmp = torch.ones(mib, dtype=torch.uint8) * 4  # 1 MiB, then 4 MiB alive at once
        big = torch.empty(4 * mib, dtype=torch.uint8)
        m.kept = tmp.clone()
        del tmp, big

    other = nn.Linear(4, 4)  # measured in the same session: its own, smaller range
    peak, small = peak_memory([model, other], step, torch.device('cpu'))
    state = sum(p.numel() * 4 for p in model.parameters())
    assert 5 * mib <= peak - state < 6.1 * mib
    assert 5 * mib <= small - 80 < 6.1 * mib


@pytest.mark.slow
def test_detector_rows_render():
    """One Mask R-CNN iteration per detector (tiny backbones, 64 px), then its table; the
    twin of the first row gets its weights."""
    xcit = f'{REPO}/configs/xcit/mask-rcnn_xcit-s12-p16_%sfpn_ms-crop-3x_coco.py'
    detectors = [('XCiT-S12/16 plain', xcit % ''), ('XCiT-S12/16 precond', xcit % 'precond_'),
                 ('Swin-T stock mmdet (reference)',
                  'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')]
    s = BenchmarkSettings(
        sizes=['det'], tiny=True, repeats=1, warmup=0, solvers=False, detectors=detectors)
    rows = bench_detectors(s)
    text = render_markdown(
        dict(
            settings=s,
            started=datetime.datetime.now(),
            load_start=(0., 0., 0.),
            load_end=(0., 0., 0.),
            backbones=[],
            detectors=rows,
            solvers=[]), 'python tool --tiny')
    header, body = table(text, 'detector')
    assert 'ratios against the first row (XCiT-S12/16 plain)' in text
    assert [r[0] for r in body] == [label for label, _ in detectors]
    assert float(body[0][header.index('train ratio')]) == 1.0
    assert all(float(r[header.index('peak ratio')]) > 0 for r in body)


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILIES)
def test_layer_row_conditions_a_copy_of_the_first_attention_layer(family):
    """The layer twin gets the input the layer sees in its backbone (Swin: window batches);
    spectral_folded times the same function as the plain layer plus lam·I."""
    from mmcondattn.analysis.benchmark import _first_attention_input, bench_layer, build_plain
    s = BenchmarkSettings(families=[family], sizes=['cls'], tiny=True, repeats=2, warmup=0)
    row = bench_layer(family, 'cls', 'spectral_folded', s)
    backbone = build_plain(family, 'cls', (32, 32), tiny=True)
    layer, args, kwargs = _first_attention_input(backbone, torch.randn(4, 3, 32, 32))
    assert row.shape == tuple(args[0].shape) and args[0].shape[-1] in (32, 64)
    assert [len(t) for t in row.train.samples] == [2, 2] and row.peak_ratio > 0


@pytest.mark.slow
def test_backbone_row_twins_share_weights_and_differ_by_conditioning():
    s = BenchmarkSettings(
        families=['xcit'],
        methods=['spectral_folded'],
        sizes=['det'],
        tiny=True,
        repeats=1,
        warmup=0)
    row = bench_backbone('xcit', 'det', 'spectral_folded', s)
    assert isinstance(row, Row) and row.shape == (1, 3, 64, 64)
    # folded spectral corrections leave no buffers: the twins hold equally many bytes
    assert row.peak[0] > 0 and row.peak[1] > 0


# --- optimised paths equal the plain reference implementations ------------------------------


@pytest.mark.parametrize('detach', [True, False])
def test_preconditioned_linear_equals_per_head_reference(detach):
    """Row scaling of the merged heads (fused SDPA kept) = preconditioning as docs/methods.md
    states it, on (B, heads, N, d) before the merge; forward and gradients, float32 rounding
    only (rtol 1e-5)."""
    torch.manual_seed(0)
    b, heads, n, d = 2, 4, 9, 8
    proj = nn.Linear(heads * d, 16)
    fast = PreconditionedLinear.from_linear(proj, heads, dict(scale=2., detach=detach))
    o = (torch.randn(b, heads, n, d) * torch.logspace(-2, 2, n)[:, None]).requires_grad_()

    def reference(o):  # C_h = diag(s / (‖(O_h)_i‖ + eps)) per head, then merge and project
        norm = o.norm(dim=-1, keepdim=True)
        c = 2. / ((norm.detach() if detach else norm) + 1e-6)
        return proj((c * o).transpose(1, 2).reshape(b, n, heads * d))

    up = torch.randn(b, n, 16)
    params = [o, proj.weight, proj.bias]
    ref = reference(o)
    g_ref = torch.autograd.grad((ref * up).sum(), params)
    out = fast(o.transpose(1, 2).reshape(b, n, heads * d))
    g_out = torch.autograd.grad((out * up).sum(), params)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(g_out, g_ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def _precond_pair(proj):
    fast = PreconditionedLinear.from_linear(proj, 4, dict(scale=2.))
    return fast, lambda x: F.linear(
        precondition(x.unflatten(-1, (4, 8)), scale=2.).flatten(-2), proj.weight, proj.bias)


def _spectral_pair(qkv):
    fast = SpectralLinear.from_linear(qkv, dict(lam=10., targets=('q', 'v')))
    return fast, lambda x: F.linear(
        x, qkv.weight + spectral_correction(qkv.weight, 'identity', 10., ('q', 'v')), qkv.bias)


@pytest.mark.parametrize('dtype,autocast,tol', [(torch.float64, False, 1e-12),
                                                (torch.float32, True, 2e-2)])
@pytest.mark.parametrize('pair,out_features', [(_precond_pair, 16), (_spectral_pair, 96)])
@pytest.mark.parametrize('layout', ['token-major', 'channel-major', 'channel-major-1'])
def test_hand_written_backwards_equal_the_reference_in_other_precisions(
        pair, out_features, layout, dtype, autocast, tol):
    """The Functions with a written-out backward (precond projection, spectral identity) =
    their reference (``precondition`` then F.linear; F.linear with W + lam·I) in float64
    (rtol 1e-12) and under CPU bf16 autocast (rtol 2e-2, bf16's 8-bit mantissa): values and
    gradients of x, W, b, in the reference's dtypes; also for a channel-major input (XCA
    hands ``proj`` a permuted view of (B, heads, d, N): the precond projection then works in
    that order, and keeps it for one image), and without autograd."""
    torch.manual_seed(0)
    lin = nn.Linear(32, out_features).to(dtype)
    fast, reference = pair(lin)
    rows = torch.logspace(-2, 2, 9, dtype=dtype)
    b = 1 if layout == 'channel-major-1' else 2
    if layout != 'token-major':  # (B, heads, d, N) permuted to (B, N, heads·d), as XCA does
        x = (torch.randn(b, 4, 8, 9, dtype=dtype) * rows).requires_grad_()
        inp = lambda: x.permute(0, 3, 1, 2).reshape(b, 9, 32)  # noqa: E731
        assert not inp().is_contiguous()
    else:
        x = (torch.randn(b, 9, 32, dtype=dtype) * rows[:, None]).requires_grad_()
        inp = lambda: x  # noqa: E731
    params = [x, lin.weight, lin.bias]

    def run(fn):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            y = fn(inp())
            with torch.no_grad():
                y_no_grad = fn(inp())
        return [y, y_no_grad] + list(torch.autograd.grad(y.float().square().sum(), params))

    for got, want in zip(run(fast), run(reference)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())


def _saved_activation_bytes(module, x):
    """Bytes of the distinct storages autograd saves for backward in ``module(x)``,
    parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(saved.values())


def test_conditioned_vit_attention_saves_no_extra_activation():
    """Fused SDPA keeps its output; preconditioning saves only C (B·N·heads floats) on top,
    not a second B×N×D copy; spectral identity mode saves nothing extra and holds no buffer."""
    from mmpretrain.models.utils.attention import MultiheadAttention

    from mmcondattn.models.attention import condition_attention_modules
    torch.manual_seed(0)
    b, n, dims, heads = 2, 50, 64, 4
    stock = MultiheadAttention(dims, heads)
    x = torch.randn(b, n, dims, requires_grad=True)
    base = _saved_activation_bytes(stock, x)
    extra = {}
    for method in ('precond', 'spectral'):
        cond = copy.deepcopy(stock)
        condition_attention_modules(cond, {method: {}})
        extra[method] = _saved_activation_bytes(cond, x) - base
    assert extra == dict(precond=b * n * heads * 4, spectral=0)
    assert not list(cond.buffers()) and 'qkv.correction' in cond.state_dict()


@pytest.mark.parametrize('targets', [('q', 'k', 'v'), ('k', )])
def test_spectral_identity_without_matmul_equals_w_plus_c(targets):
    """lam·x added to F.linear's output = F.linear(x, W + lam·I, b); gradients of x, W, b too
    (float32 rounding: rtol 1e-5)."""
    torch.manual_seed(0)
    lin = nn.Linear(12, 36)
    fast = SpectralLinear.from_linear(lin, dict(lam=10., targets=targets))
    x = torch.randn(3, 5, 12, requires_grad=True)
    up = torch.randn(3, 5, 36)
    params = [x, lin.weight, lin.bias]
    ref = F.linear(x, lin.weight + spectral_correction(lin.weight, 'identity', 10., targets),
                   lin.bias)
    g_ref = torch.autograd.grad((ref * up).sum(), params)
    out = fast(x)
    g_out = torch.autograd.grad((out * up).sum(), params)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(g_out, g_ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-4)


def test_folded_backbone_equals_conditioned():
    """spectral_folded rows time the same function as spectral ones (rtol 1e-4)."""
    from mmcondattn.analysis.benchmark import build_twins
    x = torch.randn(2, 3, 32, 32)
    _, cond = build_twins('vit', 'cls', 'spectral', (32, 32), tiny=True)
    _, folded = build_twins('vit', 'cls', 'spectral_folded', (32, 32), tiny=True)
    with torch.no_grad():
        want, got = cond.eval()(x)[-1], folded.eval()(x)[-1]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not any('correction' in k for k in folded.state_dict())


@pytest.mark.parametrize('shape', [(64, 16), (16, 64)])
@pytest.mark.parametrize('kappa', [1e2, 1e4, 1e6])
def test_default_gram_solver_equals_svd_reference(shape, kappa):
    """The default solver (gram, float64 Gram matrix) = the exact SVD construction for
    full-rank X (up to κ(X) = 1e4, where float32 singular vectors are still determined:
    atol 3e-3 on entries of size ~1), and κ(X + C) <= 2 (+1e-2) up to κ(X) = 1e6."""
    import math
    n, d = shape
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(2, n, min(n, d), generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(2, d, min(n, d), generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -math.log10(kappa), min(n, d), dtype=torch.float64)
    x = (3 * (u * s) @ v.mT).float()
    got = condition_tokens(x)
    if kappa <= 1e4:
        torch.testing.assert_close(got, condition_tokens(x, 'svd'), rtol=1e-3, atol=3e-3)
    assert (condition_number(got) <= 2 + 1e-2).all()
