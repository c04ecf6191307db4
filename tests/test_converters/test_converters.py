"""Checkpoint converters, proved on outputs: timm models with random weights (and state
dicts in the official XCiT classification / detection layouts built from them) are
converted and must compute what the source computes. Also the classifier -> detection
converter and the command lines."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from cond_helpers import official_swin_layout
from conftest import run_tool

import mmcondattn.openmmlab  # noqa: F401  registers the backbones
from mmcondattn.converters import (ConversionError, classifier_to_detector, convert_swin,
                                   convert_vit, convert_xcit, load_state_dict)
from mmcondattn.models.backbones import ConditionedSwinDet, ConditionedXCiT, ConditionedXCiTDet

timm = pytest.importorskip('timm')


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in every saved float tensor (weights, norms, layer scales, BN
    statistics; not spectral corrections); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if name.endswith('correction'):
                continue
            if name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


def classifier(backbone: dict, head: dict, neck=None):
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules()
    return MODELS.build(dict(type='ImageClassifier', backbone=backbone, neck=neck,
                             head=head)).eval()


def assert_same_logits(model, reference, x):
    with torch.no_grad():
        torch.testing.assert_close(model(x, mode='tensor'), reference(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ timm ViT
@pytest.mark.parametrize('layer_scale', [0., 0.5])
def test_timm_vit(layer_scale):
    ref = randomise(
        timm.models.vision_transformer.VisionTransformer(
            img_size=32,
            patch_size=8,
            embed_dim=48,
            depth=2,
            num_heads=3,
            num_classes=10,
            init_values=layer_scale or None))
    model = classifier(
        dict(
            type='ConditionedViT',
            arch=dict(embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=192),
            img_size=32,
            patch_size=8,
            layer_scale_init_value=layer_scale),
        dict(type='VisionTransformerClsHead', num_classes=10, in_channels=48))
    model.load_state_dict(convert_vit(ref.state_dict()), strict=True)
    assert_same_logits(model, ref, torch.randn(2, 3, 32, 32))


# ----------------------------------------------------------------------------- timm Swin
SWIN = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def _timm_swin():
    # window 2 on 128 px: every stage map (32 .. 4) is larger than the window, so timm keeps
    # the shifted windows everywhere like the mm* implementations
    return randomise(
        timm.models.swin_transformer.SwinTransformer(
            img_size=128,
            patch_size=4,
            window_size=2,
            embed_dim=16,
            depths=(2, 2, 2, 2),
            num_heads=(1, 2, 2, 4),
            num_classes=10))


@pytest.mark.parametrize('layout', ['timm', 'official'])
def test_swin(layout):
    ref = _timm_swin()
    sd = ref.state_dict()
    if layout == 'official':
        sd = official_swin_layout(sd)
        for name, buf in ref.named_buffers():  # official checkpoints hold the index buffers
            if name.endswith('relative_position_index'):
                sd[name] = buf
        assert any(k.startswith('layers.0.downsample.') for k in sd)
    converted = convert_swin(sd)
    model = classifier(
        dict(type='ConditionedSwin', arch=SWIN, img_size=128, window_size=2),
        dict(type='LinearClsHead', num_classes=10, in_channels=128),
        neck=dict(type='GlobalAveragePooling'))
    model.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, 128, 128)
    assert_same_logits(model, ref, x)

    # the detection form: same backbone keys (+ its norm0..2), last level = timm's features
    det = ConditionedSwinDet(arch=SWIN, window_size=2).eval()
    backbone = {k[len('backbone.'):]: v for k, v in converted.items() if k.startswith('backbone.')}
    res = det.load_state_dict(backbone, strict=False)
    assert res.unexpected_keys == []
    assert sorted({k.split('.')[0] for k in res.missing_keys}) == ['norm0', 'norm1', 'norm2']
    with torch.no_grad():
        torch.testing.assert_close(
            det(x)[3], ref.forward_features(x).permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- XCiT (cls)
def _timm_xcit(patch_size, depth=2):
    return randomise(
        timm.models.xcit.Xcit(
            img_size=64,
            patch_size=patch_size,
            embed_dim=64,
            depth=depth,
            num_heads=4,
            num_classes=10,
            eta=1.0,
            tokens_norm=True))


def _official_xcit_cls_layout(timm_sd):
    """timm's XCiT state dict in the official facebookresearch/xcit layout: ``pos_embeder``,
    fused class-attention ``qkv``, under ``'model'``."""
    out = OrderedDict()
    for k, v in timm_sd.items():
        k = k.replace('pos_embed.', 'pos_embeder.')
        if '.attn.q.' in k and k.startswith('cls_attn_blocks'):
            qkv = [timm_sd[k.replace('.attn.q.', f'.attn.{t}.')] for t in 'qkv']
            out[k.replace('.attn.q.', '.attn.qkv.')] = torch.cat(qkv, 0)
        elif not (k.startswith('cls_attn_blocks') and ('.attn.k.' in k or '.attn.v.' in k)):
            out[k] = v
    return {'model': out}


@pytest.mark.parametrize('patch_size', [16, 8])
@pytest.mark.parametrize('layout', ['timm', 'official'])
def test_xcit_classifier(tmp_path, layout, patch_size):
    ref = _timm_xcit(patch_size)
    ckpt = ref.state_dict() if layout == 'timm' else _official_xcit_cls_layout(ref.state_dict())
    path = str(tmp_path / 'src.pth')
    torch.save(ckpt, path)
    model = classifier(
        dict(
            type='ConditionedXCiT',
            arch=dict(embed_dims=64, depth=2, num_heads=4, tokens_norm=True),
            patch_size=patch_size), dict(type='LinearClsHead', num_classes=10, in_channels=64))
    model.load_state_dict(convert_xcit(load_state_dict(path)), strict=True)
    assert_same_logits(model, ref, torch.randn(2, 3, 64, 64))


# ----------------------------------------------------------------------- XCiT (detection)
def _official_fpns(dim, patch_size):
    """fpn1..fpn4 exactly as the official XCiT detection backbone builds them (BN for its
    SyncBN: same keys)."""
    up = lambda: nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)  # noqa: E731
    if patch_size == 16:
        return nn.ModuleDict(
            dict(
                fpn1=nn.Sequential(up(), nn.BatchNorm2d(dim), nn.GELU(), up()),
                fpn2=nn.Sequential(up()),
                fpn3=nn.Identity(),
                fpn4=nn.MaxPool2d(kernel_size=2, stride=2)))
    return nn.ModuleDict(
        dict(
            fpn1=nn.Sequential(up()),
            fpn2=nn.Identity(),
            fpn3=nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2)),
            fpn4=nn.Sequential(nn.MaxPool2d(kernel_size=4, stride=4))))


def _official_detection_forward(xcit, fpns, out_indices, x):
    """The official ``XCiT.forward_features`` of the detection backbone, on timm's blocks."""
    B = x.shape[0]
    x, (Hp, Wp) = xcit.patch_embed(x)
    x = x + xcit.pos_embed(B, Hp, Wp).reshape(B, -1, x.shape[1]).permute(0, 2, 1)
    feats = []
    for i, blk in enumerate(xcit.blocks):
        x = blk(x, Hp, Wp)
        if i in out_indices:
            feats.append(x.permute(0, 2, 1).reshape(B, -1, Hp, Wp))
    return [fpns[f'fpn{i + 1}'](f) for i, f in enumerate(feats)]


@pytest.mark.parametrize('patch_size', [16, 8])
def test_xcit_official_detection_checkpoint(patch_size):
    out_indices = (0, 1, 2, 3)
    xcit = _timm_xcit(patch_size, depth=4)
    fpns = randomise(_official_fpns(64, patch_size), seed=1)
    # the official Mask R-CNN checkpoint: backbone.{patch_embed, pos_embeder, blocks, fpnN}.*
    # (no class token / class attention / norm / head in the detection backbone) + the rest
    state = OrderedDict()
    for k, v in xcit.state_dict().items():
        if k.startswith(('patch_embed.', 'blocks.', 'pos_embed.')):
            state['backbone.' + k.replace('pos_embed.', 'pos_embeder.')] = v
    state.update(('backbone.' + k, v) for k, v in fpns.state_dict().items())
    others = {
        'neck.lateral_convs.0.conv.weight': torch.randn(8, 64, 1, 1),
        'rpn_head.rpn_conv.weight': torch.randn(8, 8, 3, 3),
        'roi_head.bbox_head.fc_cls.weight': torch.randn(81, 16)
    }
    state.update(others)

    converted = convert_xcit(state)  # raises if any key has no mapping
    for k, v in others.items():
        assert converted[k] is v
    det = ConditionedXCiTDet(
        arch=dict(embed_dims=64, depth=4, num_heads=4),
        patch_size=patch_size,
        out_indices=out_indices).eval()
    backbone = {k[len('backbone.'):]: v for k, v in converted.items() if k.startswith('backbone.')}
    det.load_state_dict(backbone, strict=True)  # every key mapped, none left over
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = _official_detection_forward(xcit, fpns, out_indices, x)
        got = det(x)
    assert len(got) == 4
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('patch_size', [16, 8])
def test_official_xcit_coco_checkpoint_loads_through_its_zoo_config(tmp_path, patch_size):
    """An official facebookresearch/xcit Mask R-CNN 3x file of XCiT-T12 (mmdet 2.x: meta,
    state_dict, optimizer; official backbone keys) loads with mmengine's ``load_checkpoint``
    -- what ``tools/test.py CONFIG FILE`` does -- strictly into the detector of the config of
    its ``*_3rdparty_coco`` zoo row, unconverted; its backbone then computes what the
    official backbone computes, and neck / heads hold the file's weights."""
    from conftest import REPO
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from mmcondattn.compat import replace_syncbn
    cfg = Config.fromfile(f'{REPO}/configs/xcit/mask-rcnn_xcit-t12-p{patch_size}_fpn_ms-crop-3x'
                          '_coco.py')
    cfg.model.backbone.init_cfg = None  # no download here; the file brings every weight
    replace_syncbn(cfg.model)
    register_all_modules()
    det = MODELS.build(cfg.model).eval()
    cond = det.backbone.conditioning
    assert not cond.layer_methods and cond.tokens is None

    # XCiT-T12 as the official code builds it (timm's Xcit has the official module names)
    xcit = randomise(
        timm.models.xcit.Xcit(
            patch_size=patch_size, embed_dim=192, depth=12, num_heads=4, eta=1.0, tokens_norm=True))
    fpns = randomise(_official_fpns(192, patch_size), seed=1)
    state = OrderedDict()
    for k, v in xcit.state_dict().items():
        if k.startswith(('patch_embed.', 'blocks.', 'pos_embed.')):
            state['backbone.' + k.replace('pos_embed.', 'pos_embeder.')] = v
    state.update(('backbone.' + k, v) for k, v in fpns.state_dict().items())
    g = torch.Generator().manual_seed(2)
    rest = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in det.state_dict().items() if not k.startswith('backbone.')
    }
    state.update(rest)
    path = str(tmp_path / f'maskrcnn_xcit_tiny_12_p{patch_size}.pth')
    torch.save(
        {
            'meta': {
                'mmdet_version': '2.11.0',
                'epoch': 36,
                'CLASSES': ('person', 'car')
            },
            'state_dict': state,
            'optimizer': {
                'state': {},
                'param_groups': [{
                    'lr': 1e-6,
                    'params': [0]
                }]
            }
        }, path)

    load_checkpoint(det, path, map_location='cpu', strict=True)  # raises on any key mismatch
    after = det.state_dict()
    for k, v in rest.items():
        assert torch.equal(after[k], v), k
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want = _official_detection_forward(xcit, fpns, (3, 5, 7, 11), x)
        got = det.backbone(x)
    for w, o in zip(want, got):
        torch.testing.assert_close(o, w, rtol=1e-5, atol=1e-5)


def test_unmappable_official_xcit_keys_are_one_error():
    """A file in the official layout with a key no rule maps fails loading with one error
    that names the key, not with a silently half-loaded backbone."""
    from mmcondattn.models.backbones.utils import BackboneConfigError
    det = ConditionedXCiTDet(
        arch=dict(embed_dims=64, depth=4, num_heads=4), out_indices=(0, 1, 2, 3))
    state = {
        'blocks.0.attn.qkv.weight': torch.zeros(192, 64),
        'blocks.0.attn.rel_pos': torch.zeros(3)
    }
    with pytest.raises(BackboneConfigError, match=r'blocks\.0\.attn\.rel_pos'):
        det.load_state_dict(state, strict=False)


# --------------------------------------------------------------- classifier -> detection
def test_classifier_to_detector_xcit():
    arch = dict(embed_dims=64, depth=4, num_heads=4, tokens_norm=True)
    cond = dict(spectral=dict(mode='svd'))
    torch.manual_seed(0)
    cls = randomise(
        ConditionedXCiT(arch=arch, conditioning=cond, out_type='featmap', out_indices=(2, )))
    state = {'backbone.' + k: v for k, v in cls.state_dict().items()}
    state['head.fc.weight'] = torch.randn(10, 64)
    out = classifier_to_detector(state)
    assert set(out) == {
        k[len('backbone.'):]
        for k in state if k.startswith('backbone.')
    } - {k
         for k in cls.state_dict() if k.startswith(('cls_token', 'ca_layers.', 'norm.'))}
    assert any(k.endswith('qkv.correction') for k in out)  # conditioned weights travel along
    det = ConditionedXCiTDet(arch=arch, out_indices=(0, 1, 2, 3), conditioning=cond).eval()
    res = det.load_state_dict(out, strict=False)
    assert res.unexpected_keys == []
    assert all(k.startswith('pyramid.') for k in res.missing_keys)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # stride-16 level (identity of block 2) = classifier featmap
        torch.testing.assert_close(det(x)[2], cls(x)[0], rtol=0, atol=0)


def test_classifier_to_detector_families():
    vit = {
        'backbone.cls_token': torch.zeros(1, 1, 8),
        'backbone.pos_embed': torch.zeros(1, 5, 8),
        'backbone.layers.0.attn.qkv.weight': torch.zeros(24, 8),
        'head.layers.head.weight': torch.zeros(10, 8)
    }
    out = classifier_to_detector(vit)
    assert set(out) == {'pos_embed', 'layers.0.attn.qkv.weight'}
    assert out['pos_embed'].shape == (1, 4, 8)
    swin = {
        'backbone.stages.0.blocks.0.norm1.weight': torch.zeros(8),
        'backbone.norm3.weight': torch.zeros(8),
        'head.fc.weight': torch.zeros(2, 8)
    }
    assert set(classifier_to_detector(swin)) == {'stages.0.blocks.0.norm1.weight', 'norm3.weight'}
    with pytest.raises(ConversionError, match='no backbone'):
        classifier_to_detector({'head.fc.weight': torch.zeros(2, 8)})


# ---------------------------------------------------------------------------- bad input
def test_unknown_keys_are_listed():
    sd = _timm_xcit(16).state_dict()
    sd['dist_token'] = torch.zeros(1, 1, 64)
    sd['blocks.0.attn.q_norm.weight'] = torch.zeros(16)
    with pytest.raises(ConversionError, match=r'2 keys have no mapping.*dist_token.*q_norm'):
        convert_xcit(sd)
    with pytest.raises(ConversionError, match=r'timm ViT: \d+ keys .*patch_embed\.proj\.0\.0'):
        convert_vit(sd)


def test_checkpoint_with_code_is_refused(tmp_path):
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'payload': ConversionError('x')}, path)
    with pytest.raises(RuntimeError, match='refused'):
        load_state_dict(path)


# ---------------------------------------------------------------------------- commands
def _cli(name, *args):
    """Run tools/model_converters/NAME with ``args``: (exit status, stderr)."""
    r = run_tool([f'tools/model_converters/{name}', *map(str, args)], cwd='.')
    return r.returncode, r.stderr


@pytest.mark.e2e
def test_command_lines(tmp_path):
    src, dst = str(tmp_path / 'xcit.pth'), str(tmp_path / 'out.pth')
    torch.save({'model': _timm_xcit(16).state_dict()}, src)
    assert _cli('xcit2mmcondattn.py', src, dst)[0] == 0
    ckpt = torch.load(dst, weights_only=True)
    assert 'backbone.xca_layers.0.attn.qkv.weight' in ckpt['state_dict']
    code, err = _cli('xcit2mmcondattn.py', src, dst)
    assert code == 1 and 'exists; pass --force' in err  # refuses to overwrite
    assert _cli('xcit2mmcondattn.py', src, dst, '--force')[0] == 0
    code, err = _cli('vit2mmcondattn.py', src, tmp_path / 'v.pth')  # wrong converter
    assert code == 1 and 'no mapping' in err
    det = str(tmp_path / 'det.pth')
    assert _cli('cls2det.py', dst, det, '--family', 'xcit')[0] == 0
    keys = torch.load(det, weights_only=True)['state_dict']
    assert 'cls_token' not in keys and 'xca_layers.1.gamma1' in keys
    model = ConditionedXCiTDet(
        arch=dict(embed_dims=64, depth=2, num_heads=4),
        out_indices=(0, 0, 1, 1),
        init_cfg=dict(type='Pretrained', checkpoint=det))
    model.init_weights()
    for k, v in keys.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    swin = str(tmp_path / 'swin.pth')
    torch.save(_timm_swin().state_dict(), swin)
    assert _cli('swin2mmcondattn.py', swin, tmp_path / 's.pth')[0] == 0
