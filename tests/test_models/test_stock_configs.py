"""The stock-config walk: every config shipped inside the installed mmdet and
mmpretrain (their ``.mim/configs``) whose backbone is a ViT (``VisionTransformer``), Swin
(``SwinTransformer``) or XCiT takes ``type='Conditioned…'`` plus a ``conditioning`` and
nothing else.

- every such backbone builds with all three methods on (on the meta device: shapes only, so
  giant models cost nothing);
- with conditioning off it equals the stock backbone on the same weights, output on a small
  image, for one config per package, family and size class (width and number of attention
  layers: T / S / B / L ...), the stock weights shared into ours (no second copy); giant
  ones (more than ``EQUAL_MAX_PARAMS``) by their state-dict layout only.

Backbone classes that derive from those three but are other models are not wrapped by this
package; :data:`NOT_WRAPPED` lists them with the reason, and the walk checks the list.
"""
import copy
import glob
import os.path as osp
import re
from collections import defaultdict
from functools import lru_cache

import pytest
import torch
from cond_helpers import meta_build
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmcondattn.openmmlab  # noqa: F401  registers the backbones

pytestmark = pytest.mark.slow  # the whole file (see pytest.ini)

FAMILIES = {
    'VisionTransformer': 'ConditionedViT',
    'SwinTransformer': 'ConditionedSwin',
    'XCiT': 'ConditionedXCiT'
}
# stock subclasses of the three (found by the walk), with why there is no conditioned form
NOT_WRAPPED = {
    'DistilledVisionTransformer': 'DeiT with a distillation token: its own forward and '
    'outputs; ConditionedViT extends VisionTransformer itself',
    'DeiT3': 'DeiT III: its own encoder layers (layer scale inside its own attention block)',
    'ViTEVA02': 'EVA-02: rotary position embedding and SwiGLU layers of its own',
    'MoCoV3ViT': 'MoCo v3 pretraining encoder (fixed sin-cos position embedding, frozen '
    'patch projection): a self-supervised algorithm part',
    'SimMIMSwinTransformer': 'SimMIM pretraining encoder (mask token, masked forward)',
    'MAEViT': 'MAE pretraining encoder (random masking in its forward)',
    'MFFViT': 'MFF pretraining encoder (an MAEViT)',
    'MILANViT': 'MILAN pretraining encoder (an MAEViT)',
    'MaskFeatViT': 'MaskFeat pretraining encoder (mask token, masked forward)',
}
ALL_ON = dict(precond=dict(), spectral=dict(), tokens=dict(solver='svd'))
EQUAL_MAX_PARAMS = 400e6  # larger backbones: layout only (ViT-H, EVA-G: GBs of weights)


def _package_root(pkg):
    return osp.join(osp.dirname(__import__(pkg).__file__), '.mim', 'configs')


def _bases(path, text, roots):
    """The config files ``path`` names in ``_base_`` (relative or ``pkg::``)."""
    out = []
    for ref in re.findall(r"""['"]([\w.:/-]+\.py)['"]""", text):
        if '::' in ref:
            pkg, rest = ref.split('::', 1)
            out.append(osp.join(roots.get(pkg, ''), rest))
        else:
            out.append(osp.normpath(osp.join(osp.dirname(path), ref)))
    return out


@lru_cache()
def stock_types():
    """Every registered name (both registries) of the three stock classes and their
    subclasses, e.g. 'DistilledVisionTransformer'."""
    from mmdet.models.backbones import SwinTransformer as DetSwin
    from mmdet.registry import MODELS as DET
    from mmpretrain.models.backbones import SwinTransformer, VisionTransformer, XCiT
    from mmpretrain.registry import MODELS as PRE
    stock = (DetSwin, SwinTransformer, VisionTransformer, XCiT)
    names = set()
    for registry in (DET, PRE):
        names |= {
            n
            for n, c in registry.module_dict.items()
            if isinstance(c, type) and issubclass(c, stock) and not n.startswith('Conditioned')
        }
    return sorted(names)


@lru_cache()
def candidate_files():
    """Per package, the config files that name a ViT / Swin / XCiT type themselves or
    through their ``_base_`` chain (a text scan: loading every config would take minutes)."""
    roots = {pkg: _package_root(pkg) for pkg in ('mmdet', 'mmpretrain')}
    texts, bases = {}, {}
    for root in roots.values():
        for path in glob.glob(osp.join(root, '**', '*.py'), recursive=True):
            texts[path] = open(path).read()
    for path, text in texts.items():
        bases[path] = _bases(path, text, roots)
    text_type = re.compile(r"""type=['"](?:\w+\.)?(%s)['"]""" % '|'.join(stock_types()))
    hit = {p for p, t in texts.items() if text_type.search(t)}
    while True:
        more = {p for p in texts if p not in hit and any(b in hit for b in bases[p])}
        if not more:
            break
        hit |= more
    return {pkg: sorted(p for p in hit if p.startswith(root)) for pkg, root in roots.items()}


def _stock_class(scope, type_):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    return MODELS.get(type_)


@lru_cache()
def walk():
    """(scope, config path, backbone cfg) of every stock config whose ``model.backbone`` is a
    ViT / Swin / XCiT or a subclass of one."""
    from mmdet.models.backbones import SwinTransformer as DetSwin
    from mmpretrain.models.backbones import SwinTransformer, VisionTransformer, XCiT
    stock = (DetSwin, SwinTransformer, VisionTransformer, XCiT)
    found = []
    for scope, paths in candidate_files().items():
        for path in paths:
            model = Config.fromfile(
                path, import_custom_modules=False, format_python_code=False).get('model') or {}
            backbone = model.get('backbone') if isinstance(model, dict) else None
            if not isinstance(backbone, dict) or not isinstance(backbone.get('type'), str):
                continue
            cls = _stock_class(scope, backbone['type'])
            if isinstance(cls, type) and issubclass(cls, stock):
                found.append((scope, path, backbone.to_dict()))
    return found


def _build(scope, cfg):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(copy.deepcopy(cfg))


def _swap(cfg, conditioning):
    scope_prefix, _, name = cfg['type'].rpartition('.')
    return dict(
        cfg,
        type=(scope_prefix + '.' if scope_prefix else '') + FAMILIES[name],
        conditioning=conditioning)


def _family(cfg):
    return cfg['type'].rpartition('.')[2]


def _numel(model):
    return sum(t.numel() for t in model.state_dict().values())


def _input(scope, cfg):
    """A small image the backbone takes: a multiple of its patch and window sizes."""
    size = 64 if scope == 'mmdet' else 32
    if _family(cfg) == 'VisionTransformer':
        size = max(size, 2 * cfg.get('patch_size', 16))
    if scope == 'mmpretrain' and _family(cfg) == 'SwinTransformer':  # no padding of maps
        size = cfg.get('img_size', 224)  # smaller than a window (the stock class refuses)
    return torch.randn(1, cfg.get('in_channels', 3), size, size)


def _check_equal(scope, cfg, stock_cfg):
    """Our backbone (conditioning off) on the stock one's weights gives the stock output."""
    torch.manual_seed(0)
    with meta_build():
        ours = _build(scope, cfg)
        size = _numel(ours)
    if size > EQUAL_MAX_PARAMS:  # layout only: same keys and shapes as the stock class
        with meta_build():
            stock = _build(scope, stock_cfg)
        assert {
            k: v.shape
            for k, v in ours.state_dict().items()
        } == {
            k: v.shape
            for k, v in stock.state_dict().items()
        }
        return 'layout'
    stock = _build(scope, stock_cfg)
    stock.eval()  # the stock XCiT's / Swin's eval() returns None
    ours.load_state_dict(stock.state_dict(), strict=True, assign=True)  # shares the tensors
    ours.eval()
    left = [n for n, t in list(ours.named_parameters()) + list(ours.named_buffers()) if t.is_meta]
    assert not left, f'not set from the stock weights: {left[:5]}'
    x = _input(scope, stock_cfg)
    with torch.no_grad():
        want, got = stock(x), ours(x)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    return 'output'


GROUPS = [('mmdet', 'SwinTransformer'), ('mmpretrain', 'VisionTransformer'),
          ('mmpretrain', 'SwinTransformer'), ('mmpretrain', 'XCiT')]


def test_the_walk_finds_the_stock_configs():
    counts = defaultdict(int)
    for scope, _, cfg in walk():
        counts[scope, _family(cfg)] += 1
    # mmdet 3.3.0: 56 Swin configs; mmpretrain 1.2.0: 28 XCiT (14 archs x 224 / 384 px)
    assert counts['mmdet', 'SwinTransformer'] >= 56
    assert counts['mmpretrain', 'XCiT'] >= 28
    assert counts['mmpretrain', 'VisionTransformer'] >= 20
    assert counts['mmpretrain', 'SwinTransformer'] >= 8
    assert set(counts) == set(GROUPS) | {(s, t) for s, t in counts if t in NOT_WRAPPED}


def test_the_classes_not_wrapped_are_listed_with_a_reason():
    derived = {_family(cfg) for _, _, cfg in walk() if _family(cfg) not in FAMILIES}
    assert derived == set(NOT_WRAPPED), derived


@pytest.mark.parametrize('scope,family', GROUPS, ids=['-'.join(g) for g in GROUPS])
def test_every_stock_config_swaps_by_type(scope, family):
    configs = [(path, cfg) for s, path, cfg in walk() if s == scope and _family(cfg) == family]
    unique = {}  # many configs share a backbone (schedules, datasets, heads)
    for path, cfg in configs:
        cfg = dict(cfg, init_cfg=None) if 'init_cfg' in cfg else cfg  # nothing to download
        unique.setdefault(repr(sorted(cfg.items())), (path, cfg))
    failures, checked, sizes = [], defaultdict(list), {}
    for path, cfg in sorted(unique.values(), key=lambda pc: pc[0]):
        name = osp.relpath(path, _package_root(scope))
        try:
            with meta_build():
                model = _build(scope, _swap(cfg, ALL_ON))
            assert type(model).__name__.startswith('Conditioned')
            assert model.conditioning.enabled and model.num_conditioned_attention > 0
            width = getattr(model, 'embed_dims', None) or model.num_features[0]  # mmdet Swin
            key = width, model.num_conditioned_attention  # size class: width and depth
            if key not in sizes:  # the first config of each size: equal to the stock one
                sizes[key] = name
                checked[_check_equal(scope, _swap(cfg, None), cfg)].append(name)
        except Exception as e:  # collect all, report together
            failures.append(f'{name}: {type(e).__name__}: {str(e).splitlines()[0]}')
    assert not failures, '\n'.join(failures)
    print(scope, family, len(configs), 'configs,', len(unique), 'backbones; equal:', dict(checked))
    assert len(unique) >= 2 and checked['output'], (checked, sizes)
