"""Every config under configs/ parses, builds on CPU and runs one forward; detection configs
differ from their stock mmdet base only where the docs say (backbone, neck inputs, optimizer)."""
import glob
import os.path as osp
import re

import pytest
import torch
from conftest import REPO
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmcondattn.openmmlab  # noqa: F401  registers the conditioned backbones
from mmcondattn.compat import replace_syncbn

pytestmark = pytest.mark.slow  # the whole file (see pytest.ini)

CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs/**/*.py'), recursive=True) if '/_base_/' not in p)
rel = lambda p: osp.relpath(p, osp.join(REPO, 'configs'))  # noqa: E731


def _build(cfg):
    """Build ``cfg.model`` in the config's own registry scope (BN instead of SyncBN on CPU)."""
    scope = cfg.get('default_scope', 'mmdet')
    replace_syncbn(cfg.model)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmpretrain.registry import MODELS
        from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        return scope, MODELS.build(cfg.model).eval()


def test_there_is_a_config_per_family_and_method():
    names = set(map(rel, CONFIGS))
    assert 'mask_rcnn_xcit_precond.py' in names
    for fam in ('xcit/mask-rcnn_xcit-s12-p16', 'xcit/mask-rcnn_xcit-t12-p16',
                'xcit/mask-rcnn_xcit-s24-p16', 'xcit/mask-rcnn_xcit-m24-p16',
                'xcit/mask-rcnn_xcit-s12-p8', 'swin/mask-rcnn_swin-t-p4-w7',
                'swin/mask-rcnn_swin-s-p4-w7', 'vit/mask-rcnn_vit-b-p16', 'xcit/xcit-s12-p16',
                'swin/swin-t', 'vit/deit-s', 'vit/vit-b-p16'):
        for method in ('', 'precond_', 'spectral_', 'tokens_'):
            assert any(n.startswith(f'{fam}_{method}') for n in names), (fam, method)


@pytest.mark.parametrize('path', CONFIGS, ids=rel)
def test_config_builds_and_runs_forward(path):
    cfg = Config.fromfile(path)
    scope, model = _build(cfg)
    torch.manual_seed(0)
    with torch.no_grad(), DefaultScope.overwrite_default_scope(scope):
        if scope == 'mmdet':
            from mmdet.testing import demo_mm_inputs
            num_classes = cfg.model.get('roi_head', {}).get('bbox_head', {})
            num_classes = (num_classes[-1] if isinstance(num_classes, list) else num_classes).get(
                'num_classes', 80)
            packed = demo_mm_inputs(
                1, image_shapes=[(3, 64, 64)], num_classes=num_classes, with_mask=True)
            data = model.data_preprocessor(packed, False)
            feats = model.extract_feat(data['inputs'])
            assert [f.shape[-1] for f in feats][:4] == [16, 8, 4, 2]  # strides 4..32
            results = model(**data, mode='predict')
            assert len(results) == 1 and 'bboxes' in results[0].pred_instances
        else:
            channels = cfg.model.backbone.get('in_channels', 3)  # 1: the grey Fashion-MNIST ones
            out = model(
                torch.randn(1, channels, 224, 224), mode='tensor')  # the size the configs train at
            assert out.shape == (1, cfg.model.head.num_classes) and torch.isfinite(out).all()


def _stock_root(path):
    """The ``mmdet::`` config at the root of ``path``'s ``_base_`` chain."""
    text = open(path).read()
    bases = re.findall(r"'((?:mmdet::|\.{1,2}/)[^']+\.py)'", text.split('model =')[0])
    for base in bases:
        if base.startswith('mmdet::'):
            return base
        if '/_base_/' not in base:
            return _stock_root(osp.normpath(osp.join(osp.dirname(path), base)))
    return None


def _flat(d, prefix=''):
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict):
            out.update(_flat(v, key + '.'))
        else:
            out[key] = v
    return out


# What a detection config here may change in its stock base; everything else (heads, neck
# logic, data, schedule, runtime) must stay stock. `xcit_*` / `pretrained` are base variables
# that only feed the backbone.
ALLOWED = ('model.backbone.', 'model.neck.in_channels', 'optim_wrapper.', 'custom_imports.',
           'xcit_', 'pretrained')
# configs/demo/, configs/study/ and configs/trees/ point stock models at small data (generated
# shapes, the tree crowns): they change data, schedule and head widths.
SMALL_DATA = ('/configs/demo/', '/configs/study/', '/configs/trees/')
DET_CONFIGS = [p for p in CONFIGS if _stock_root(p) and not any(d in p for d in SMALL_DATA)]


@pytest.mark.parametrize('path', DET_CONFIGS, ids=rel)
def test_detection_config_equals_its_stock_base_outside_the_backbone(path, tmp_path):
    stock_file = tmp_path / 'stock.py'
    stock_file.write_text(f"_base_ = '{_stock_root(path)}'\n")
    ours, stock = _flat(Config.fromfile(path).to_dict()), _flat(
        Config.fromfile(str(stock_file)).to_dict())
    changed = {
        k
        for k in set(ours) | set(stock) if ours.get(k, '<absent>') != stock.get(k, '<absent>')
    }
    outside = sorted(k for k in changed if not k.startswith(ALLOWED))
    assert not outside, f'{rel(path)} changes stock keys outside the backbone: {outside}'
    assert any(k.startswith('model.backbone.') for k in changed)


def test_detection_configs_are_found():
    assert len(DET_CONFIGS) >= 30 and all('mmdet::' in _stock_root(p) for p in DET_CONFIGS)
