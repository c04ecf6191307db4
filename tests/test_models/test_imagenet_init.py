"""Every COCO config starts its backbone from the public ImageNet-1k checkpoint of its arch, by
URL (issue 15, failure 4: they trained from scratch).

No download is possible here: each loading path is tested with a checkpoint made locally in
the exact key layout of the URL's file, put where torch's hub cache looks for that URL
(``$TORCH_HOME/hub/checkpoints/<file name>``), so the configs' own URLs are what loads."""
import glob
import os.path as osp
import re
from functools import lru_cache

import pytest
import torch
from cond_helpers import build, meta_build, official_swin_layout
from conftest import REPO
from mmengine.config import Config

import mmcondattn.openmmlab  # noqa: F401  registers the backbones
from mmcondattn.compat import replace_syncbn

COCO_CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs/**/*.py'), recursive=True)
    if ('_coco' in osp.basename(p) or osp.basename(p) == 'mask_rcnn_xcit_precond.py')
    and '/_base_/' not in p and '/demo/' not in p and '/study/' not in p)
rel = lambda p: osp.relpath(p, osp.join(REPO, 'configs'))  # noqa: E731
RECIPE = 'docs/get_started.md#starting-from-a-public-checkpoint'
SWIN_SIZES = {(2, 2, 6, 2): 'tiny', (2, 2, 18, 2): 'small'}


@lru_cache()
def public_checkpoint_urls():
    """Every checkpoint URL the installed mmdet / mmpretrain configs and metafiles name."""
    import mmdet
    import mmpretrain
    urls = set()
    for pkg in (mmdet, mmpretrain):
        root = osp.join(osp.dirname(pkg.__file__), '.mim', 'configs')
        for path in glob.glob(osp.join(root, '**', '*.*'), recursive=True):
            if path.endswith(('.py', '.yml')):
                urls.update(re.findall(r'https://[^\s\'"]+\.pth', open(path).read()))
    return urls


@lru_cache()
def zoo_model_of(url):
    """The mmpretrain model-zoo entry whose weights are ``url`` (None if there is none)."""
    from mmpretrain.apis import ModelHub
    ModelHub._register_mmpretrain_models()
    names = [n for n, m in ModelHub._models_dict.items() if m.weights == url]
    return names[0] if names else None


def _conditioned(backbone):
    return any(backbone.get('conditioning', {}).get(m) for m in ('precond', 'spectral', 'tokens'))


def test_coco_configs_are_found():
    assert len(COCO_CONFIGS) >= 38


@pytest.mark.slow
@pytest.mark.parametrize('path', COCO_CONFIGS, ids=rel)
def test_coco_config_starts_from_the_public_imagenet_checkpoint_of_its_arch(path):
    b = Config.fromfile(path).model.backbone
    init = b.init_cfg
    assert isinstance(init, dict) and init.type == 'Pretrained', init
    url = init.checkpoint
    assert url in public_checkpoint_urls(), f'no installed mmdet / mmpretrain file names {url}'
    if b.type == 'ConditionedSwin':  # the official release, converted by mmdet's converter
        size = SWIN_SIZES[tuple(b.depths)]
        assert osp.basename(url) == f'swin_{size}_patch4_window{b.window_size}_224.pth'
        assert b.convert_weights is True
    else:  # an mmpretrain model-zoo classifier of the same arch, trained on ImageNet-1k
        name = zoo_model_of(url)
        assert name is not None and '_in1k' in name and 'in21k' not in name, name
        from mmpretrain.apis import ModelHub
        zoo = ModelHub.get(name).config  # a Config already
        zoo = (zoo if isinstance(zoo, Config) else Config.fromfile(zoo)).model.backbone
        with meta_build():  # shapes only
            ours = build('mmdet', dict(b, init_cfg=None))
        if b.type == 'ConditionedXCiT':
            assert (zoo.embed_dims, zoo.depth, zoo.num_heads,
                    zoo.patch_size) == (ours.embed_dims, len(ours.xca_layers),
                                        ours.xca_layers[0].attn.num_heads,
                                        ours.patch_embed.patch_size), name
        else:
            assert zoo.type == 'VisionTransformer' and zoo.get('patch_size', 16) == b.patch_size
            assert zoo.arch.replace('deit-', '') == b.arch.replace('deit-', ''), name
        assert init.prefix == 'backbone.'
    text = open(path).read()
    if _conditioned(b):  # the conditioned variants say what these weights are
        assert 'without\n# conditioning' in text or 'trained\n# without conditioning' in text
        assert RECIPE in text


def test_the_recipe_the_configs_point_to_exists():
    assert '\n## Pretrain on ImageNet, then fine-tune on COCO\n' in open(
        osp.join(REPO, 'docs/get_started.md')).read()  # the anchor of RECIPE


BASELINES = {
    'xcit': 'configs/xcit/mask-rcnn_xcit-s12-p16_fpn_ms-crop-3x_coco.py',
    'vit': 'configs/vit/mask-rcnn_vit-b-p16_fpn_ms-crop-3x_coco.py',
    'swin': 'configs/swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
}


def _backbone_cfg(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    replace_syncbn(cfg.model)
    return cfg.model.backbone


def _cache(tmp_path, monkeypatch, url, ckpt):
    """Put ``ckpt`` where torch's hub looks for ``url``."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    folder = tmp_path / 'hub' / 'checkpoints'
    folder.mkdir(parents=True)
    torch.save(ckpt, str(folder / osp.basename(url)))


@pytest.mark.slow
@pytest.mark.parametrize('family', ['xcit', 'vit'])
def test_mmpretrain_zoo_checkpoint_loads_into_the_detection_backbone(family, tmp_path, monkeypatch):
    from mmpretrain import get_model
    b = _backbone_cfg(BASELINES[family])
    url = b.init_cfg.checkpoint
    torch.manual_seed(0)
    classifier = get_model(zoo_model_of(url))  # the zoo model's own config, random weights
    state = classifier.state_dict()
    _cache(tmp_path, monkeypatch, url, {
        'meta': {
            'mmpretrain_version': '1.0.0'
        },
        'state_dict': state
    })
    det = build('mmdet', b)
    det.init_weights()
    loaded = 0
    for k, v in det.state_dict().items():
        src = state.get('backbone.' + k)
        if k.startswith('pyramid.'):
            assert src is None
        elif k == 'pos_embed':  # ViT: without the class token's position
            torch.testing.assert_close(v, src[:, 1:], rtol=0, atol=0)
        else:
            torch.testing.assert_close(v, src, rtol=0, atol=0, msg=k)
            loaded += 1
    assert loaded > 100


@pytest.mark.slow
def test_official_swin_release_loads_as_into_mmdets_swin(tmp_path, monkeypatch):
    import timm
    from mmdet.registry import MODELS
    b = _backbone_cfg(BASELINES['swin'])
    url = b.init_cfg.checkpoint
    torch.manual_seed(0)
    ref = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False)
    official = official_swin_layout(ref.state_dict())
    for name, buf in ref.named_buffers():  # the release holds the index buffers
        if name.endswith('relative_position_index'):
            official[name] = buf
    _cache(tmp_path, monkeypatch, url, {'model': official})
    ours = build('mmdet', b)
    ours.init_weights()
    stock_cfg = dict(b, type='SwinTransformer')
    del stock_cfg['conditioning']
    stock = MODELS.build(stock_cfg)
    stock.init_weights()
    want = stock.state_dict()
    assert list(ours.state_dict()) == list(want)
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(
        ours.patch_embed.projection.weight, ref.patch_embed.proj.weight, rtol=0, atol=0)
