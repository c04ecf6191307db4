"""Conditioned backbones under ``torch.compile``: no graph break beyond the stock backbone's,
and the same outputs (and gradients) as in eager mode.

Graph breaks are counted with ``torch._dynamo.explain`` (stock backbones break too, e.g. ViT
at mmcv's ``drop_path``, which branches on a numpy drop probability); a conditioned twin
(stock weights loaded, every conditioned preset of the benchmark) may break no more often.
Outputs: ``backend='aot_eager'`` (dynamo + AOT autograd, no code generation: cheap) in train
mode with gradients, eval mode without autograd, one inductor case (``slow``). The models of
``cond_helpers.BACKBONES`` cut to one block (:data:`ARCHS`) at 32 px, no drop path (compiled
and eager runs would draw different random paths). Skipped where torch.compile cannot run.
"""
import importlib
import shutil
import sys

import pytest
import torch
from cond_helpers import BACKBONES, build

import mmcondattn.openmmlab  # noqa: F401  registers the backbones
from mmcondattn.analysis.presets import PRESETS, preset
from mmcondattn.conditioning import fold_conditioning

FAMILIES = tuple(BACKBONES)
METHODS = tuple(name for name in PRESETS if name != 'baseline')
STOCK = {'vit': 'VisionTransformer', 'swin': 'SwinTransformer', 'xcit': 'XCiT'}
# torch 2.1's dynamo cannot trace what the conditioned layers call (measured on 2.1.2; 2.13
# traces them without a break): torch.promote_types and Tensor.is_contiguous return
# non-Tensors (conditioning/precond.py), tuple.index (conditioning/spectral.py's forward), and
# torch.cond is missing (conditioning/tokens.py). Compiled twins are supported from torch 2.2.
OLD_DYNAMO = tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) < (2, 2)


def _compile_unsupported():
    """Why this torch / Python cannot run torch.compile (for conditioned twins), or None."""
    if OLD_DYNAMO:
        return (f'torch {torch.__version__}: dynamo breaks in the conditioned layers (no '
                'torch.cond, promote_types / is_contiguous / tuple.index untraceable); '
                'compiled twins need torch >= 2.2')
    try:
        dynamo = importlib.import_module('torch._dynamo')
    except ImportError as e:
        return f'torch {torch.__version__} has no torch.compile / dynamo: {e}'
    if not dynamo.is_dynamo_supported():
        return (f'torch.compile (dynamo) is not supported by torch {torch.__version__} on '
                f'Python {sys.version.split()[0]}')
    try:
        torch.compile(lambda t: t + 1, backend='eager')(torch.zeros(1))
    except RuntimeError as e:
        return f'torch.compile fails on torch {torch.__version__}: {e}'
    return None


UNSUPPORTED = _compile_unsupported()
pytestmark = pytest.mark.skipif(UNSUPPORTED is not None, reason=str(UNSUPPORTED))

# one block per family is enough to see what conditioning adds (and halves the tracing)
ARCHS = dict(
    vit=dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64),
    swin=dict(embed_dims=16, depths=[1, 1], num_heads=[2, 2]),
    xcit=dict(embed_dims=32, depth=1, num_heads=2))


def _cfg(family, stock=False, conditioning=None):
    cfg = dict(BACKBONES[family], arch=ARCHS[family], drop_path_rate=0.)
    if not stock:
        return dict(cfg, conditioning=conditioning)
    cfg['type'] = STOCK[family]
    if family == 'xcit':  # the stock XCiT takes the arch's fields as its own arguments
        cfg.update(cfg.pop('arch'))
    return cfg


def _build(family, method=None):
    """The stock backbone of ``family`` (``method=None``), or its twin conditioned with the
    preset ``method``, stock weights loaded (and folded for ``spectral_folded``)."""
    torch.manual_seed(0)
    stock = build('mmpretrain', _cfg(family, stock=True))
    if method is None:
        return stock
    conditioning, fold = preset(method)
    cond = build('mmpretrain', _cfg(family, conditioning=conditioning))
    missing, unexpected = cond.load_state_dict(stock.state_dict(), strict=False)
    assert not unexpected and all(k.endswith('correction') for k in missing), (missing, unexpected)
    if fold:
        fold_conditioning(cond)
    return cond


def _input(batch=2):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _where(reason):
    """'file:line' of the innermost frames of a graph's end, inside site-packages / the repo."""
    frames = []
    for f in reason.user_stack[-3:]:
        name = f.filename.split('site-packages/')[-1].split('/mmcondattn/')[-1]
        frames.append(f'{name}:{f.lineno}')
    return ' <- '.join(reversed(frames))


def explain(model, x, train=False):
    """(graph breaks, one line per graph) of ``model(x)`` under ``torch._dynamo.explain``.

    Graph breaks: the graphs that end in a break (explain's ``break_reasons``). Not
    ``graph_count - 1``: where dynamo skips a whole frame (stock ViT: a break inside its loop
    over the layers), the module calls in it run eagerly and each compiles on its own, so a
    forward hook there (token conditioning's) is one more graph without any break. Each line
    says how a graph ended ('break: <reason>' or 'end: <reason>') and where."""
    torch._dynamo.reset()
    model.train(train)
    with torch.set_grad_enabled(train):
        out = torch._dynamo.explain(model)(x)
    torch._dynamo.reset()
    lines = []
    for gm in out.graphs:
        r = gm.compile_subgraph_reason
        kind = 'break' if r.graph_break else 'end'
        lines.append(f'{kind}: {r.reason.splitlines()[0][:200]} @ {_where(r)}')
    return len(out.break_reasons), lines


_STOCK_BREAKS = {}


def stock_breaks(family, train):
    """explain() of the stock backbone, once per family and mode."""
    key = (family, train)
    if key not in _STOCK_BREAKS:
        _STOCK_BREAKS[key] = explain(_build(family), _input(), train)
    return _STOCK_BREAKS[key]


def _cases(modes):
    out = []
    for mode in modes:
        for family in FAMILIES:
            for method in METHODS:
                slow = mode == 'train' or method == 'tokens'
                marks = [pytest.mark.slow] if slow else []
                out.append(pytest.param(family, method, mode, marks=marks))
    return out


@pytest.mark.parametrize('family,method,mode', _cases(('eval', 'train')))
def test_conditioning_adds_no_graph_break(family, method, mode):
    """A conditioned backbone breaks dynamo's graph no more often than the stock one (the
    message lists the graphs of both: how each ended, and where)."""
    train = mode == 'train'
    stock, stock_reasons = stock_breaks(family, train)
    cond, cond_reasons = explain(_build(family, method), _input(), train)
    assert cond <= stock, (f'{family}/{method} ({mode}): {cond} graph breaks, stock {stock}\n'
                           'conditioned graphs:\n  ' + '\n  '.join(cond_reasons) +
                           '\nstock graphs:\n  ' + '\n  '.join(stock_reasons))


def _outputs(out):
    return [out] if isinstance(out, torch.Tensor) else list(out)


def _train_step(call, model, x):
    """Outputs of ``call(x)`` in train mode and the gradients of ``model``'s parameters."""
    model.train().zero_grad(set_to_none=True)
    outs = _outputs(call(x))
    sum((o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return [o.detach() for o in outs], grads


def _close(got, want, rtol, atol, what):
    """``atol`` relative to ``want``'s largest entry: AOT autograd decomposes some backwards
    (layer norm, ...), so sums over the batch and tokens round differently in float32."""
    scale = max(1., want.abs().max().item())
    torch.testing.assert_close(
        got, want, rtol=rtol, atol=atol * scale, msg=lambda m: f'{what}: {m}')


def check_compiled_equals_eager(family, method, backend, mode, rtol=1e-5, atol=1e-4):
    """``torch.compile(model, backend=backend)`` against the eager model (the same one):
    ``train``: outputs and every parameter's gradient of a training step; ``eval``: outputs
    in eval mode without autograd."""
    torch._dynamo.reset()
    model = _build(family, method)
    compiled = torch.compile(model, backend=backend)
    x = _input()
    if mode == 'eval':
        with torch.no_grad():
            want = _outputs(model.eval()(x))
            got = _outputs(compiled.eval()(x))
    else:
        want, want_grads = _train_step(model, model, x)
        got, got_grads = _train_step(compiled, model, x)
        assert got_grads.keys() == want_grads.keys() and want_grads
        for name in want_grads:
            _close(got_grads[name], want_grads[name], rtol, atol, f'gradient of {name}')
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        _close(g, w, rtol, atol, f'output {i}')
    torch._dynamo.reset()


def _output_cases():
    """A training step of XCiT with precond (XCA hands it channel-major views; its backward
    is written out) in the fast set; the other cases and eval mode (the no-autograd paths)
    ``slow``."""
    fast = ('xcit', 'precond', 'train')
    cases = []
    for mode in ('train', 'eval'):
        for family in FAMILIES:
            for method in METHODS:
                marks = [] if (family, method, mode) == fast else [pytest.mark.slow]
                cases.append(pytest.param(family, method, mode, marks=marks))
    return cases


@pytest.mark.parametrize('family,method,mode', _output_cases())
def test_compiled_outputs_and_gradients_equal_eager(family, method, mode):
    check_compiled_equals_eager(family, method, 'aot_eager', mode)


@pytest.mark.slow
def test_inductor_outputs_and_gradients_equal_eager():
    """The default backend generates its own kernels (C++ on CPU): a training step of XCiT
    with precond (its channel-major path) agrees up to float32 reassociation."""
    if shutil.which('c++') is None and shutil.which('g++') is None:
        pytest.skip('inductor on CPU needs a C++ compiler')
    check_compiled_equals_eager('xcit', 'precond', 'inductor', 'train', rtol=1e-4, atol=1e-4)
