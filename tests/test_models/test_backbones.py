"""Conditioned backbones: build through the registries, forward/backward, shapes, checkpoint
compatibility with the stock backbones, ``init_cfg`` from a classifier checkpoint, bad input.

Small models and images throughout (CPU, 2 cores)."""
import copy
import glob
import os.path as osp

import pytest
import torch
from cond_helpers import METHODS, build, mmengine_log

import mmcondattn.openmmlab  # noqa: F401  registers the backbones
from mmcondattn.conditioning import ConditioningConfigError, TokenConditioner
from mmcondattn.models.backbones import (ConditionedSwin, ConditionedSwinDet, ConditionedViT,
                                         ConditionedViTDet, ConditionedXCiT, ConditionedXCiTDet)

XCIT = dict(embed_dims=64, depth=4, num_heads=4, tokens_norm=True)  # t12-like, 4 blocks
# name: (scope, config, expected output channels; None for a classifier's (B, C) output)
BACKBONES = {
    'xcit-cls': ('mmpretrain', dict(type='ConditionedXCiT', arch=XCIT), None),
    'xcit-det-p16': ('mmdet', dict(type='ConditionedXCiT', arch=XCIT,
                                   out_indices=(0, 1, 2, 3)), [64] * 4),
    'xcit-det-p8':
    ('mmdet', dict(type='ConditionedXCiT', arch=XCIT, patch_size=8,
                   out_indices=(0, 1, 2, 3)), [64] * 4),
    'vit-cls': ('mmpretrain', dict(type='ConditionedViT', arch='deit-tiny', img_size=64), None),
    'vit-det': ('mmdet', dict(type='ConditionedViT', arch='deit-tiny', img_size=64), [192] * 4),
    'swin-cls': ('mmpretrain', dict(type='ConditionedSwin', arch='tiny', pad_small_map=True), None),
    'swin-det': ('mmdet', dict(type='ConditionedSwin', arch='tiny'), [96, 192, 384, 768]),
}
NUM_ATTENTION = {'xcit': 4, 'vit': 12, 'swin': 12}


@pytest.mark.slow
@pytest.mark.parametrize('method', list(METHODS))
@pytest.mark.parametrize('name', list(BACKBONES))
def test_build_forward_backward(name, method):
    scope, cfg, channels = BACKBONES[name]
    torch.manual_seed(0)
    model = build(scope, dict(cfg, conditioning=METHODS[method]))
    model.init_weights()
    model.train()
    cond = model.conditioning
    assert cond.enabled == (method != 'off')
    family = name.split('-')[0]
    assert model.num_conditioned_attention == (NUM_ATTENTION[family] if cond.layer_methods else 0)
    assert hasattr(model, 'token_conditioning') == (cond.tokens is not None)

    x = torch.randn(2, 3, 64, 64)
    outs = model(x)
    if channels is None:  # classifier: the stock outputs (class token; Swin: last stage)
        assert len(outs) == 1
        assert outs[0].shape == ((2, 768, 2, 2) if family == 'swin' else (2, model.embed_dims))
    else:
        assert [o.shape[1] for o in outs] == channels
        assert [64 // o.shape[-1] for o in outs] == [4, 8, 16, 32]
        assert [64 // o.shape[-2] for o in outs] == [4, 8, 16, 32]
    sum(o.float().pow(2).mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f'parameters outside the graph (DDP would fail): {no_grad[:5]}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    if method != 'off':  # conditioning changes the function of the same weights
        plain = build(scope, cfg).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        model.eval()
        with torch.no_grad():
            assert not torch.allclose(plain(x)[-1], model(x)[-1])


@pytest.mark.slow
def test_same_name_two_registries():
    assert type(build('mmdet', dict(type='ConditionedXCiT', arch=XCIT,
                                    out_indices=(0, 1, 2, 3)))) is ConditionedXCiTDet
    assert type(build('mmpretrain', dict(type='ConditionedXCiT', arch=XCIT))) is ConditionedXCiT
    assert type(build('mmdet', dict(type='ConditionedViT', arch='deit-tiny'))) is ConditionedViTDet
    assert type(build('mmpretrain', dict(type='ConditionedViT',
                                         arch='deit-tiny'))) is ConditionedViT
    assert type(build('mmdet', dict(type='ConditionedSwin'))) is ConditionedSwinDet
    assert type(build('mmpretrain', dict(type='ConditionedSwin'))) is ConditionedSwin


# ----------------------------------------------------------------------------- presets
@pytest.mark.slow
def test_xcit_presets_equal_mmpretrain_configs():
    """Every stock mmpretrain XCiT config's backbone equals our preset of that name."""
    import mmpretrain
    from mmengine.config import Config
    short = dict(nano='n', tiny='t', small='s', medium='m', large='l')
    files = sorted(
        glob.glob(
            osp.join(
                osp.dirname(mmpretrain.__file__), '.mim/configs/xcit/xcit-*-p*_8xb128_in1k.py')))
    assert len(files) == 14
    for f in files:
        size, depth, patch = osp.basename(f).split('_')[0].split('-')[1:4]
        b = Config.fromfile(f).model.backbone
        preset = ConditionedXCiT.arch_zoo[short[size] + depth]
        got = {k: b[k] for k in preset}
        assert got == preset, (f, got, preset)
        assert b.patch_size == int(patch[1:])
    assert set(ConditionedXCiT.arch_zoo) == {'n12', 't12', 't24', 's12', 's24', 'm24', 'l24'}


@pytest.mark.slow
def test_vit_and_swin_presets_are_the_stock_ones():
    from mmpretrain.models.backbones import SwinTransformer, VisionTransformer
    assert ConditionedSwinDet.arch_zoo is SwinTransformer.arch_zoo
    assert ConditionedSwin.arch_zoo is SwinTransformer.arch_zoo
    assert {'tiny', 'small', 'base'} <= set(SwinTransformer.arch_zoo)
    assert ConditionedViT.arch_zoo is VisionTransformer.arch_zoo
    assert {'deit-tiny', 'deit-small', 'deit-base', 'base'} <= set(VisionTransformer.arch_zoo)
    det = ConditionedSwinDet(arch='small')
    assert det.stages[2].blocks.__len__() == 18 and det.num_features == [96, 192, 384, 768]


@pytest.mark.slow
def test_xcit_detection_defaults_follow_official_configs():
    m = ConditionedXCiTDet(arch='t12')
    assert m.out_indices == [3, 5, 7, 11] and m.embed_dims == 192
    assert not hasattr(m, 'cls_token') and len(m.ca_layers) == 0
    assert isinstance(m.pyramid.fpn1[1], torch.nn.BatchNorm2d)
    m = ConditionedXCiTDet(arch=dict(XCIT, depth=24), pyramid_norm_cfg=dict(type='SyncBN'))
    assert m.out_indices == [7, 11, 15, 23]
    assert isinstance(m.pyramid.fpn1[1], torch.nn.SyncBatchNorm)
    assert m.train() is m and ConditionedXCiT(arch=XCIT).eval().training is False


# ---------------------------------------------------------------------- checkpoint compat
def _stock(name):
    """(stock backbone, our backbone config) with equal hyper-parameters."""
    from mmdet.models.backbones import SwinTransformer as DetSwin
    from mmpretrain.models.backbones import SwinTransformer, VisionTransformer, XCiT
    if name == 'xcit-cls':
        return XCiT(**XCIT), dict(type='ConditionedXCiT', arch=XCIT)
    if name == 'vit-cls':
        return (VisionTransformer(arch='deit-tiny', img_size=64),
                dict(type='ConditionedViT', arch='deit-tiny', img_size=64))
    if name == 'swin-cls':
        return (SwinTransformer(arch='tiny', pad_small_map=True),
                dict(type='ConditionedSwin', arch='tiny', pad_small_map=True))
    if name == 'swin-det':
        return DetSwin(), dict(type='ConditionedSwin', arch='tiny')
    if name == 'vit-det':  # stock ViT without class token -> our pyramid's stride-16 level
        return (VisionTransformer(
            arch='deit-tiny', img_size=64, with_cls_token=False,
            out_type='featmap'), dict(type='ConditionedViT', arch='deit-tiny', img_size=64))
    raise KeyError(name)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['off', 'spectral', 'all'])
@pytest.mark.parametrize('name', ['xcit-cls', 'vit-cls', 'swin-cls', 'swin-det', 'vit-det'])
def test_stock_state_dict_loads_and_matches(name, method):
    torch.manual_seed(0)
    stock, cfg = _stock(name)
    stock.init_weights()
    stock.eval()
    ours = build(BACKBONES[name][0], dict(cfg, conditioning=METHODS[method])).eval()
    res = ours.load_state_dict(stock.state_dict(), strict=False)
    assert res.unexpected_keys == []
    extra = [k for k in res.missing_keys if not k.endswith('.qkv.correction')]
    assert sorted(extra) == sorted(  # torch fills a missing BN num_batches_tracked itself
        k for k in ours.state_dict()
        if name == 'vit-det' and k.startswith('pyramid.') and not k.endswith('num_batches_tracked'))
    n_corr = len(res.missing_keys) - len(extra)
    assert n_corr == (
        NUM_ATTENTION[name.split('-')[0]] if 'spectral' in str(METHODS[method]) else 0)
    if method == 'off':
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            want, got = stock(x), ours(x)
        if name == 'vit-det':
            got = got[2:3]  # stride-16 level = identity of the last block's map
        assert len(want) == len(got)
        for w, g in zip(want, got):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


def _classifier_checkpoint(tmp_path, cls_cfg, family):
    """Save an mmpretrain-classifier-style checkpoint of the classification form."""
    torch.manual_seed(1)
    cls = build('mmpretrain', cls_cfg)
    cls.init_weights()
    state = {'backbone.' + k: v for k, v in cls.state_dict().items()}
    state['head.fc.weight'] = torch.randn(10, 8)
    path = str(tmp_path / f'{family}_cls.pth')
    torch.save({'state_dict': state, 'meta': {}}, path)
    return path, state


DET_FROM_CLS = {  # family: (classification config, detection config, keys only det has)
    'xcit': (dict(type='ConditionedXCiT', arch=XCIT),
             dict(type='ConditionedXCiT', arch=XCIT, out_indices=(0, 1, 2, 3)), 'pyramid.'),
    'vit': (dict(type='ConditionedViT', arch='deit-tiny', img_size=64),
            dict(type='ConditionedViT', arch='deit-tiny', img_size=64), 'pyramid.'),
    'swin': (dict(type='ConditionedSwin', arch='tiny'), dict(type='ConditionedSwin', arch='tiny'),
             ('norm0.', 'norm1.', 'norm2.')),
}


@pytest.mark.slow
@pytest.mark.parametrize('family', list(DET_FROM_CLS))
def test_detection_init_from_classifier_checkpoint(tmp_path, family):
    cls_cfg, det_cfg, det_only = DET_FROM_CLS[family]
    cond = METHODS['all']
    path, state = _classifier_checkpoint(tmp_path, dict(cls_cfg, conditioning=cond), family)
    torch.manual_seed(2)
    det = build(
        'mmdet',
        dict(
            det_cfg,
            conditioning=cond,
            init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.')))
    with mmengine_log() as log:
        det.init_weights()
    text = '\n'.join(log)
    loaded = 0
    for k, v in det.state_dict().items():
        src = state.get('backbone.' + k)
        if k.startswith(det_only):
            assert src is None
            assert k.endswith('num_batches_tracked') or k in text  # reported as missing
        elif k == 'pos_embed':  # ViT: the class token's row is cut off
            torch.testing.assert_close(v, src[:, 1:], rtol=0, atol=0)
        else:
            assert src is not None, k
            torch.testing.assert_close(v, src, rtol=0, atol=0)
            loaded += 1
    assert loaded > 50
    assert 'unexpected key' not in text
    if family in ('xcit', 'vit'):
        assert 'classification-only keys (' in text and 'cls_token' in text


@pytest.mark.slow
def test_checkpoint_with_wrong_keys_is_reported(tmp_path):
    cls_cfg, det_cfg, _ = DET_FROM_CLS['xcit']
    _, state = _classifier_checkpoint(tmp_path, cls_cfg, 'xcit')
    state['backbone.bogus.weight'] = torch.zeros(1)
    del state['backbone.xca_layers.1.attn.qkv.weight']
    path = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': state}, path)
    det = build(
        'mmdet',
        dict(det_cfg, init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.')))
    with mmengine_log() as log:
        det.init_weights()
    text = '\n'.join(log)
    assert 'bogus.weight' in text and 'xca_layers.1.attn.qkv.weight' in text


# ------------------------------------------------------------------------ token position
@pytest.mark.parametrize('position', ['before_pos_embed', 'after_pos_embed'])
def test_token_conditioning_position_and_class_token(position):
    """The conditioner sees only the patch tokens, before or after the position embedding."""
    torch.manual_seed(0)
    tokens = dict(solver='svd', position=position)
    model = ConditionedViT(
        arch=dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64),
        img_size=32,
        patch_size=8,
        conditioning=dict(tokens=tokens)).eval()
    torch.nn.init.normal_(model.pos_embed)
    torch.nn.init.normal_(model.cls_token)
    seen = []
    model.layers[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        patches, _ = type(model.patch_embed).forward(model.patch_embed, x)  # (B, 16, 32)
        pos = model.pos_embed  # (1, 17, 32): class token first
        cond = TokenConditioner(solver='svd')
        if position == 'before_pos_embed':
            patches = cond(patches) + pos[:, 1:]
        else:
            patches = cond(patches + pos[:, 1:])
        cls = model.cls_token.expand(2, -1, -1) + pos[:, :1]
        torch.testing.assert_close(seen[0], torch.cat([cls, patches], 1))
    clone = copy.deepcopy(model)  # the hook follows the copy
    with torch.no_grad():
        torch.testing.assert_close(clone(x)[0], model(x)[0])


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('cls', [
    ConditionedXCiT, ConditionedXCiTDet, ConditionedViT, ConditionedViTDet, ConditionedSwin,
    ConditionedSwinDet
])
def test_unknown_arch_lists_valid_ones(cls):
    with pytest.raises(ValueError, match=r'unknown arch .*valid archs: \[') as e:
        cls(arch='huge-ish')
    valid = {
        ConditionedXCiT: 's24',
        ConditionedXCiTDet: 'm24',
        ConditionedViT: 'deit-small',
        ConditionedViTDet: 'deit-base',
        ConditionedSwin: 'small',
        ConditionedSwinDet: 'base'
    }[cls]
    assert repr(valid) in str(e.value)
    with pytest.raises(ValueError, match='lacks'):
        cls(arch=dict(embed_dims=32))


@pytest.mark.slow
def test_bad_options():
    with pytest.raises(ConditioningConfigError, match='precnd'):
        ConditionedViT(arch='deit-tiny', conditioning=dict(precnd=dict()))
    with pytest.raises(ValueError, match='give out_indices'):
        ConditionedXCiTDet(arch=dict(XCIT, depth=6))
    with pytest.raises(ValueError, match='4 block indices'):
        ConditionedXCiTDet(arch=XCIT, out_indices=(0, 1, 4, 5))
    with pytest.raises(ValueError, match='patch_size must be 16 or 8'):
        ConditionedViTDet(arch='deit-tiny', patch_size=14)
    with pytest.raises(ValueError, match='1 or 4 blocks'):
        ConditionedViTDet(arch='deit-tiny', out_indices=(3, 7))


@pytest.mark.parametrize(
    'name',
    ['xcit-det-p16', 'xcit-det-p8', 'vit-det', 'swin-det', 'vit-cls', 'swin-cls', 'xcit-cls'])
@pytest.mark.slow
def test_sizes_not_multiple_of_patch_or_window(name):
    scope, cfg, channels = BACKBONES[name]
    model = build(scope, dict(cfg, conditioning=METHODS['tokens'])).eval()
    h, w = 50, 70  # neither a multiple of the patch (16 / 8 / 4) nor of the window (7)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    if channels is None:  # the stock output
        assert outs[0].shape[:2] == (1, 768 if name == 'swin-cls' else model.embed_dims)
        return
    if name == 'swin-det':  # the stock chain: ceil at the patch embedding and each merge
        sizes, s = [], ((h + 3) // 4, (w + 3) // 4)
        for _ in range(4):
            sizes.append(s)
            s = ((s[0] + 1) // 2, (s[1] + 1) // 2)
    else:  # padded to multiples of 32 first
        sizes = [(64 // s, 96 // s) for s in (4, 8, 16, 32)]
    assert [tuple(o.shape[-2:]) for o in outs] == sizes


def test_xcit_detection_frozen_stages():
    model = ConditionedXCiTDet(arch=XCIT, out_indices=(0, 1, 2, 3), frozen_stages=2).train()
    frozen = [model.patch_embed, model.pos_embed, model.xca_layers[0], model.xca_layers[1]]
    for m in frozen:
        assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert all(p.requires_grad for p in model.xca_layers[2].parameters())
    assert all(p.requires_grad for p in model.pyramid.parameters())
    with pytest.raises(ValueError, match='frozen_stages'):
        ConditionedXCiTDet(arch=XCIT, out_indices=(0, 1, 2, 3), frozen_stages=5)


@pytest.mark.slow
def test_swin_detection_init_refreshes_svd_corrections():
    """mmdet's Swin initialises its weights outside mmengine's init_weights chain; the
    svd corrections must follow the initialised weights."""
    from mmcondattn.conditioning import spectral_correction
    model = ConditionedSwinDet(
        arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)),
        conditioning=dict(spectral=dict(mode='svd')))
    qkv = model.stages[1].blocks[1].attn.w_msa.qkv
    before = qkv.weight.detach().clone()
    model.init_weights()
    assert not torch.equal(before, qkv.weight)
    torch.testing.assert_close(qkv.correction, spectral_correction(qkv.weight, 'svd'))


# stock classifier backbones, and their conditioned forms, of the same architecture
STOCK = {
    'vit': (dict(type='VisionTransformer', arch='deit-tiny',
                 img_size=64), dict(type='ConditionedViT', arch='deit-tiny', img_size=64)),
    'swin':
    (dict(type='SwinTransformer', arch='tiny',
          pad_small_map=True), dict(type='ConditionedSwin', arch='tiny', pad_small_map=True)),
    'xcit': (dict(type='XCiT', **XCIT), dict(type='ConditionedXCiT', arch=XCIT)),
}


@pytest.mark.parametrize(
    'conditioning',
    [METHODS['all'],
     dict(spectral=dict(mode='svd'), tokens=dict(position='after_pos_embed'))])
@pytest.mark.slow
@pytest.mark.parametrize('family', list(STOCK))
def test_condition_model_on_a_stock_backbone_equals_the_conditioned_backbone(family, conditioning):
    """mmcondattn.condition_model is the same conditioning as the registered backbones':
    same classes (children swapped only), same state-dict keys, same outputs."""
    from mmcondattn import condition_model
    stock_cfg, cond_cfg = STOCK[family]
    torch.manual_seed(0)
    stock = build('mmpretrain', stock_cfg)
    stock.init_weights()
    ref = build('mmpretrain', dict(cond_cfg, conditioning=conditioning))
    ref.load_state_dict(stock.state_dict(), strict=False)  # svd corrections follow the load
    classes = {type(m) for m in stock.modules()}
    assert condition_model(stock, conditioning) is stock
    new = {type(m).__name__ for m in stock.modules()} - {c.__name__ for c in classes}
    assert new == {
        'SpectralLinear', 'PatchTokenConditioning', 'TokenConditioner', 'ConditioningState'
    } | ({'PreconditionedLinear'} if 'precond' in conditioning else set())  # children only
    assert set(stock.state_dict()) == set(ref.state_dict())
    assert hasattr(stock, 'token_conditioning')
    x = torch.randn(2, 3, 64, 64)
    stock.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(stock(x)[-1], ref(x)[-1])
