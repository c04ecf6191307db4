"""Finite everywhere: every method on every family, forward and backward in float32 and under
CPU autocast (bfloat16, and float16 where torch has it), on all-zero, constant, huge-valued
and random inputs, at one token per image and at the detection configs' largest input
(800×1344 after mmdet's padding). Tiny models, CPU."""
import itertools

import pytest
import torch
from cond_helpers import BACKBONES, build

import mmcondattn.openmmlab  # noqa: F401  registers the backbones

METHODS = {
    'precond': dict(precond=dict()),
    'spectral': dict(spectral=dict(lam=10.)),
    'svd': dict(spectral=dict(mode='svd')),
    'tokens': dict(tokens=dict()),
    'all': dict(precond=dict(), spectral=dict(lam=1.), tokens=dict()),
    # the warm start in between: α = 0, 1/4, 2/4, ... over the steps of a test
    'warm': dict(precond=dict(), spectral=dict(lam=1.), tokens=dict(), warm_start=dict(iters=4)),
}
INPUTS = {
    'zeros': lambda shape: torch.zeros(shape),
    'constant': lambda shape: torch.full(shape, 3.),
    'huge': lambda shape: torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1e4,
    'random': lambda shape: torch.randn(shape, generator=torch.Generator().manual_seed(1)),
}
# one token per image where the family allows it (patch 8); Swin: its smallest window grid
ONE_TOKEN = {'vit': dict(img_size=8), 'xcit': {}, 'swin': {}}
SIDE = {'vit': 8, 'xcit': 8, 'swin': 32}


def _dtypes():
    out = [None, torch.bfloat16]
    try:
        with torch.autocast('cpu', dtype=torch.float16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        out.append(torch.float16)
    except (RuntimeError, AssertionError):  # torch without CPU float16 autocast
        pass
    return out


def _finite_step(model, x, dtype):
    """Forward (autocast to ``dtype``, or float32) and backward; whether outputs and every
    gradient are finite."""
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    with torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        outs = model(x)
    sum(o.float().pow(2).mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None] + [x.grad]
    return all(torch.isfinite(o).all()
               for o in outs) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize('method', list(METHODS))
@pytest.mark.parametrize('family', ['vit', 'swin', 'xcit'])
def test_finite_on_degenerate_inputs_in_every_dtype(family, method):
    model = build(
        'mmpretrain',
        dict(
            BACKBONES[family], **ONE_TOKEN[family], drop_path_rate=0.,
            conditioning=METHODS[method]))
    model.init_weights()
    model.train()
    side = SIDE[family]
    bad = [(name, str(dtype))
           for (name, make), dtype in itertools.product(INPUTS.items(), _dtypes())
           if not _finite_step(model, make((2, 3, side, side)), dtype)]
    assert not bad, bad


@pytest.mark.slow
@pytest.mark.parametrize('family', ['vit', 'swin', 'xcit'])
def test_finite_at_the_largest_detection_input(family):
    """One 800×1344 image through the detection form with all three methods."""
    cfgs = {
        'vit':
        dict(BACKBONES['vit'], patch_size=16, img_size=224),
        'swin':
        dict(
            type='ConditionedSwin',
            embed_dims=16,
            depths=[1, 1],
            num_heads=[2, 2],
            strides=(4, 2),
            window_size=7,
            out_indices=(0, 1)),
        'xcit':
        dict(
            type='ConditionedXCiT',
            patch_size=16,
            out_indices=(0, 1, 2, 3),
            arch=dict(embed_dims=32, depth=4, num_heads=2)),
    }
    model = build('mmdet', dict(cfgs[family], drop_path_rate=0., conditioning=METHODS['all']))
    model.init_weights()
    model.train()
    x = INPUTS['random']((1, 3, 800, 1344))
    assert _finite_step(model, x, None) and _finite_step(model, x, torch.bfloat16)
