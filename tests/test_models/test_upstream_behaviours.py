"""What the stock backbones' own upstream tests check holds for the conditioned classes, with
conditioning off and with all three methods on (issue 15): ``out_type``, ``out_indices``,
``frozen_stages``, ``norm_eval``, ``with_cp`` (activation checkpointing, with every method),
odd input sizes, position embeddings resized on load (upstream: mmdet
``tests/test_models/test_backbones/test_swin.py``, mmpretrain
``tests/test_models/test_backbones/test_{vision_transformer,swin_transformer,xcit}.py``).

Each case builds the stock backbone and ours with the same arguments, gives ours the stock
weights, and compares: output shapes (and, conditioning off, values), which modules train and
which parameters take gradients after ``train()``. Small models on CPU."""
import pytest
import torch
from mmdet.models.backbones import SwinTransformer as DetSwin
from mmpretrain.models.backbones import SwinTransformer, VisionTransformer, XCiT

import mmcondattn.openmmlab  # noqa: F401
from mmcondattn.models.backbones import (ConditionedSwin, ConditionedSwinDet, ConditionedViT,
                                         ConditionedXCiT)
from mmcondattn.models.backbones.utils import BackboneConfigError

ALL = dict(precond=dict(), spectral=dict(lam=1.), tokens=dict(solver='svd'))
VIT = dict(
    arch=dict(embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64),
    img_size=32,
    patch_size=8)
SWIN = dict(
    arch=dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2)),
    img_size=32,
    window_size=4,
    out_indices=(1, ))
DSWIN = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), window_size=2)
XCIT = dict(embed_dims=32, depth=3, num_heads=2, cls_attn_layers=1)

# name: (ours, stock, arguments, input H, W)
CASES = {
    'vit-out_type-raw': (ConditionedViT, VisionTransformer, dict(VIT, out_type='raw'), (32, 32)),
    'vit-out_type-featmap': (ConditionedViT, VisionTransformer, dict(VIT,
                                                                     out_type='featmap'), (32, 32)),
    'vit-out_type-avg_featmap':
    (ConditionedViT, VisionTransformer, dict(VIT, out_type='avg_featmap'), (32, 32)),
    'vit-out_indices': (ConditionedViT, VisionTransformer, dict(VIT, out_indices=[-3, -2,
                                                                                  -1]), (32, 32)),
    'vit-odd-size': (ConditionedViT, VisionTransformer, dict(VIT, out_type='featmap'), (40, 57)),
    'vit-no-cls-token': (ConditionedViT, VisionTransformer,
                         dict(VIT, with_cls_token=False, out_type='featmap'), (32, 32)),
    'vit-frozen_stages': (ConditionedViT, VisionTransformer, dict(VIT, frozen_stages=2), (32, 32)),
    'vit-pre_norm-layer_scale': (ConditionedViT, VisionTransformer,
                                 dict(VIT, pre_norm=True, layer_scale_init_value=0.1), (32, 32)),
    'swin-out_indices': (ConditionedSwin, SwinTransformer, dict(SWIN,
                                                                out_indices=(0, 1)), (32, 32)),
    'swin-out_after_downsample':
    (ConditionedSwin, SwinTransformer, dict(SWIN, out_indices=(0, 1),
                                            out_after_downsample=True), (32, 32)),
    'swin-odd-size-pad_small_map':
    (ConditionedSwin, SwinTransformer, dict(SWIN, pad_small_map=True), (37, 45)),
    'swin-frozen_stages-norm_eval':
    (ConditionedSwin, SwinTransformer,
     dict(SWIN, frozen_stages=0, norm_eval=True, out_indices=(0, 1)), (32, 32)),
    'swin-abs_pos_embed': (ConditionedSwin, SwinTransformer, dict(SWIN, use_abs_pos_embed=True),
                           (32, 32)),
    'swin-with_cp': (ConditionedSwin, SwinTransformer, dict(SWIN, with_cp=True), (32, 32)),
    'swin-det-odd-size': (ConditionedSwinDet, DetSwin, DSWIN, (50, 70)),
    'swin-det-out_indices-frozen_stages': (ConditionedSwinDet, DetSwin,
                                           dict(DSWIN, out_indices=(1, 3),
                                                frozen_stages=1), (64, 64)),
    'swin-det-strides-abs_pos_embed':
    (ConditionedSwinDet, DetSwin,
     dict(DSWIN, use_abs_pos_embed=True, pretrain_img_size=64, strides=(4, 2, 2, 2)), (64, 64)),
    'swin-det-with_cp': (ConditionedSwinDet, DetSwin, dict(DSWIN, with_cp=True), (64, 64)),
    'xcit-out_type-featmap': (ConditionedXCiT, XCiT,
                              dict(XCIT, out_type='featmap', out_indices=(0, 2, 3)), (32, 32)),
    'xcit-out_type-raw': (ConditionedXCiT, XCiT, dict(XCIT, out_type='raw'), (32, 32)),
    'xcit-out_type-avg_featmap': (ConditionedXCiT, XCiT, dict(XCIT,
                                                              out_type='avg_featmap'), (32, 32)),
    'xcit-patch8-odd-size': (ConditionedXCiT, XCiT, dict(XCIT, patch_size=8), (40, 56)),
    'xcit-frozen_stages': (ConditionedXCiT, XCiT, dict(XCIT, frozen_stages=3), (32, 32)),
    'xcit-no-pos-embed-tokens_norm': (ConditionedXCiT, XCiT,
                                      dict(XCIT, use_pos_embed=False, tokens_norm=True), (32, 32)),
}


def _flat(outs):
    """The tensors of a backbone's output tuple (ViT 'raw' / cls outputs may nest)."""
    for o in outs:
        if isinstance(o, (tuple, list)):
            yield from _flat(o)
        else:
            yield o


def _pair(name, conditioning):
    ours_cls, stock_cls, args, _ = CASES[name]
    torch.manual_seed(0)
    stock = stock_cls(**args)
    stock.init_weights()
    ours = ours_cls(**args, conditioning=conditioning)
    res = ours.load_state_dict(stock.state_dict(), strict=False)
    assert res.unexpected_keys == []
    assert all(k.endswith('.qkv.correction') for k in res.missing_keys)
    return stock, ours


@pytest.mark.parametrize('method', ['off', 'all'])
@pytest.mark.parametrize('name', list(CASES))
def test_stock_behaviour_holds(name, method):
    stock, ours = _pair(name, ALL if method == 'all' else None)
    h, w = CASES[name][3]
    # train(): which modules are in training mode, which parameters learn
    stock.train()
    ours.train()
    train_modes = {n: m.training for n, m in stock.named_modules()}
    assert {n: m.training for n, m in ours.named_modules() if n in train_modes} == train_modes
    learn = {n: p.requires_grad for n, p in stock.named_parameters()}
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == learn
    # outputs: shapes always, values with conditioning off
    stock.eval()
    ours.eval()
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        want, got = list(_flat(stock(x))), list(_flat(ours(x)))
    assert [g.shape for g in got] == [w_.shape for w_ in want]
    if method == 'off':
        for g, w_ in zip(got, want):
            torch.testing.assert_close(g, w_, rtol=0, atol=0)
    else:
        assert all(torch.isfinite(g).all() for g in got)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['precond', 'spectral', 'tokens', 'all'])
@pytest.mark.parametrize('name', ['swin-with_cp', 'swin-det-with_cp'])
def test_activation_checkpointing_with_every_method(name, method):
    """``with_cp=True`` recomputes the blocks in backward: the same loss and gradients as
    without it, for every conditioning method."""
    cond = ALL if method == 'all' else {method: ALL[method]}
    ours_cls, _, args, (h, w) = CASES[name]
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = ours_cls(**dict(args, with_cp=with_cp), conditioning=cond)
        model.init_weights()
        model.train()
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
        loss = sum(o.pow(2).mean() for o in _flat(model(x)))
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-6, msg=n)


# ------------------------------------------------------------ loading resizes the stock way
RESIZE = {  # name: (ours, stock, saved with, loaded into)
    'vit-pos_embed': (ConditionedViT, VisionTransformer, VIT, dict(VIT, img_size=48)),
    'swin-abs_pos_embed': (ConditionedSwin, SwinTransformer, dict(SWIN, use_abs_pos_embed=True),
                           dict(SWIN, use_abs_pos_embed=True, img_size=48)),
    'swin-relative_position_bias_table': (ConditionedSwin, SwinTransformer, SWIN,
                                          dict(SWIN, window_size=8)),
}


@pytest.mark.parametrize('method', ['off', 'all'])
@pytest.mark.parametrize('name', list(RESIZE))
def test_checkpoint_of_another_size_is_resized_on_load_as_by_the_stock_class(name, method):
    ours_cls, stock_cls, saved, loaded = RESIZE[name]
    torch.manual_seed(0)
    src = stock_cls(**saved)
    src.init_weights()
    state = src.state_dict()
    stock = stock_cls(**loaded)
    ours = ours_cls(**loaded, conditioning=ALL if method == 'all' else None)
    # the stock Swin resize drops the index buffers of the other window size (recomputed);
    # scipy >= 1.14 removed the interp2d it uses: mmcondattn.compat mends it for both
    rebuilt = ('relative_position_index', ) if name == 'swin-relative_position_bias_table' else ()
    res = stock.load_state_dict(state, strict=not rebuilt)
    assert res.unexpected_keys == [] and all(k.endswith(rebuilt) for k in res.missing_keys)
    res = ours.load_state_dict(state, strict=False)
    assert res.unexpected_keys == []
    assert all(k.endswith(('.qkv.correction', ) + rebuilt) for k in res.missing_keys)
    want = stock.state_dict()
    resized = [k for k in want if want[k].shape != state[k].shape]
    assert resized  # the case does resize something
    for k in resized:
        torch.testing.assert_close(ours.state_dict()[k], want[k], rtol=0, atol=0)


# ------------------------------------------------------------------ where we differ, on purpose
@pytest.mark.parametrize('ours_cls,stock_cls', [(ConditionedViT, VisionTransformer),
                                                (ConditionedSwin, SwinTransformer)])
def test_unknown_arch_lists_the_valid_ones_instead_of_a_bare_assertion(ours_cls, stock_cls):
    """The stock classes assert (``AssertionError``, upstream tests check it); ours raise a
    ValueError (:class:`BackboneConfigError`) naming the valid archs, which the tools print as
    one line. A difference on purpose."""
    with pytest.raises(AssertionError):
        stock_cls(arch='unknown')
    with pytest.raises(BackboneConfigError, match=r"unknown arch 'unknown'; valid archs: \["):
        ours_cls(arch='unknown')


@pytest.mark.parametrize('args', [
    dict(pretrain_img_size=(224, 224, 224)),
    dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth')),
    dict(pretrained=123)
])
def test_mmdet_swin_argument_checks_are_the_stock_ones(args):
    """mmdet's test_swin: the same arguments are refused, the stock way or (a size, a
    difference on purpose) with one BackboneConfigError naming the argument."""
    with pytest.raises(Exception) as want:
        DetSwin(**DSWIN, **args)
    expected = BackboneConfigError if 'pretrain_img_size' in args else type(want.value)
    with pytest.raises(expected):
        ConditionedSwinDet(**DSWIN, **args)


def test_mmdet_swin_deprecated_pretrained_is_handled_as_in_the_stock_class():
    with pytest.warns(UserWarning, match='pretrained'):  # deprecated, as the stock one warns
        ours = ConditionedSwinDet(**DSWIN, pretrained='a.pth')
    assert ours.init_cfg == DetSwin(**DSWIN, pretrained='a.pth').init_cfg
