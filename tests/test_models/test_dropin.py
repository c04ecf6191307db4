"""The conditioned backbones as drop-ins for the stock ones (issue 15).

- every constructor argument of the stock class is accepted, spelled as the stock class
  spells it, and with conditioning off the result equals the stock backbone;
- ``arch`` stays a shorthand; ``arch`` and explicit values that disagree are one error;
- a stock config changes its backbone by ``type`` (+ ``conditioning``) only;
- mmpretrain's older Swin checkpoint layouts load as into the stock class;
- a bad backbone argument or an unreachable checkpoint URL is one line through the tools.

Small models on CPU throughout."""
import inspect
import os.path as osp

import pytest
import torch
from cond_helpers import METHODS, build, doctest_blocks, meta_build
from conftest import REPO, run_tool
from mmdet.models.backbones import SwinTransformer as DetSwin
from mmengine.config import Config, ConfigDict
from mmpretrain.models.backbones import SwinTransformer, VisionTransformer, XCiT

import mmcondattn.openmmlab  # noqa: F401  registers the backbones
from mmcondattn.models.backbones import (ConditionedSwin, ConditionedSwinDet, ConditionedViT,
                                         ConditionedViTDet, ConditionedXCiT, ConditionedXCiTDet)
from mmcondattn.models.backbones.utils import BackboneConfigError

VIT = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
SWIN = dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2))
# ours, stock, small values of the stock arguments (the rest: the stock defaults), input size
PAIRS = {
    'xcit-cls': (ConditionedXCiT, XCiT, dict(embed_dims=32, depth=2, num_heads=2), 32),
    'xcit-det': (ConditionedXCiTDet, XCiT,
                 dict(
                     embed_dims=32,
                     depth=4,
                     num_heads=2,
                     out_indices=(0, 1, 2, 3),
                     cls_attn_layers=0,
                     out_type='featmap',
                     final_norm=False), 64),
    'vit-cls': (ConditionedViT, VisionTransformer, dict(arch=VIT, img_size=32, patch_size=8), 32),
    'vit-det': (ConditionedViTDet, VisionTransformer,
                dict(arch=VIT, img_size=64, with_cls_token=False, out_type='featmap'), 64),
    'swin-cls': (ConditionedSwin, SwinTransformer,
                 dict(arch=SWIN, img_size=32, window_size=4, out_indices=(1, )), 32),
    'swin-det': (ConditionedSwinDet, DetSwin,
                 dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                      window_size=2), 64),
}


def stock_arguments(stock, **small):
    """Every argument of ``stock.__init__`` with its default, ``small`` overriding some."""
    params = inspect.signature(stock.__init__).parameters.values()
    args = {
        p.name: p.default
        for p in params if p.name != 'self' and p.default is not inspect.Parameter.empty
    }
    args.update(small)
    return args


@pytest.mark.parametrize('name', list(PAIRS))
def test_every_stock_argument_is_accepted_and_off_equals_stock(name):
    ours_cls, stock_cls, small, size = PAIRS[name]
    args = stock_arguments(stock_cls, **small)
    assert len(args) >= 18  # the whole signature, not a handful
    torch.manual_seed(0)
    stock = stock_cls(**args)
    stock.eval()  # the stock XCiT's eval() returns None
    ours = ours_cls(**args).eval()  # conditioning off
    res = ours.load_state_dict(stock.state_dict(), strict=False)
    assert res.unexpected_keys == []  # xcit-det: the unbuilt class token is dropped on load
    assert all(k.startswith('pyramid.') for k in res.missing_keys)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want, got = stock(x), ours(x)
    if name.endswith('-det') and name != 'swin-det':  # our pyramid over the stock maps
        got = got[2:3] if len(want) == 1 else [got[2]]
        want = want[-1:] if name == 'vit-det' else [want[2]]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize('ours_cls,explicit,arch', [
    (ConditionedSwinDet, dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24
                                                                             ]), 'tiny'),
    (ConditionedXCiT,
     dict(embed_dims=384, depth=12, num_heads=8, layer_scale_init_value=1.0,
          tokens_norm=True), 's12'),
    (ConditionedXCiTDet, dict(embed_dims=192, depth=12, num_heads=4), 't12'),
])
@pytest.mark.slow
def test_arch_is_a_shorthand_for_the_stock_arguments(ours_cls, explicit, arch):
    with meta_build():  # shapes only
        a, b, c = ours_cls(arch=arch), ours_cls(**explicit), ours_cls(arch=arch, **explicit)
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (a, b, c)]
    assert shapes[0] == shapes[1] == shapes[2]


@pytest.mark.parametrize('ours_cls,arch,clash,says', [
    (ConditionedSwinDet, 'tiny', dict(embed_dims=128), 'embed_dims=96'),
    (ConditionedSwinDet, 'small', dict(depths=(2, 2, 6, 2)), 'depths=[2, 2, 18, 2]'),
    (ConditionedXCiT, 's12', dict(depth=24), 'depth=12'),
    (ConditionedXCiTDet, 'm24', dict(tokens_norm=False), 'tokens_norm=True'),
])
def test_arch_and_explicit_values_that_disagree_are_one_error(ours_cls, arch, clash, says):
    with pytest.raises(BackboneConfigError) as e:
        ours_cls(arch=arch, **clash)
    msg = str(e.value)
    (key, value), = clash.items()
    assert f'arch={arch!r}' in msg and says in msg and f'{key}={value!r}' in msg
    assert '\n' not in msg


@pytest.mark.parametrize('ours_cls', [
    ConditionedXCiT, ConditionedXCiTDet, ConditionedViT, ConditionedViTDet, ConditionedSwin,
    ConditionedSwinDet
])
def test_unknown_argument_is_named_with_the_valid_ones(ours_cls):
    with pytest.raises(
            BackboneConfigError,
            match=r"unknown argument\(s\) \['embed_dim'\]; "
            r"valid arguments: \[.*'init_cfg'"):
        ours_cls(embed_dim=64)


@pytest.mark.parametrize('ours_cls,arg', [(ConditionedViTDet, dict(with_cls_token=True)),
                                          (ConditionedViTDet, dict(out_type='cls_token')),
                                          (ConditionedXCiTDet, dict(cls_attn_layers=2)),
                                          (ConditionedXCiTDet, dict(final_norm=True))])
def test_detection_forms_refuse_the_stock_values_they_cannot_honour(ours_cls, arg):
    (key, value), = arg.items()
    with pytest.raises(BackboneConfigError, match=f'{key}={value!r} is not supported'):
        ours_cls(
            arch=VIT if ours_cls is ConditionedViTDet else dict(
                embed_dims=32, depth=12, num_heads=2),
            **arg)


# ----------------------------------------------------------------- stock configs, by type
def _swapped(tmp_path, base, type_, conditioning):
    f = tmp_path / 'swapped.py'
    f.write_text(f"_base_ = '{base}'\n"
                 "custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)\n"
                 f"model = dict(backbone=dict(type='{type_}', conditioning={conditioning!r}))\n")
    return Config.fromfile(str(f)).model.backbone


@pytest.mark.slow
def test_stock_mmdet_swin_config_swaps_by_type_as_the_docs_say(tmp_path):
    """Failure 1: ``embed_dims`` given twice. The three lines of docs/configs.md (and the
    README) on mmdet's stock Swin-T Mask R-CNN config."""
    _, _, code = doctest_blocks()['three-lines']
    readme = open(osp.join(REPO, 'README.md')).read()
    assert all(line in readme for line in code.splitlines()), 'README differs from the docs'
    assert len(code.strip().splitlines()) == 3 and "'mmdet::swin/" in code
    f = tmp_path / 'mine.py'
    f.write_text(code)
    cfg = Config.fromfile(str(f)).model.backbone
    assert cfg.embed_dims == 96 and cfg.depths == [2, 2, 6, 2] and cfg.convert_weights
    model = build('mmdet', cfg)
    assert type(model) is ConditionedSwinDet and model.num_conditioned_attention == 12
    assert [len(s.blocks) for s in model.stages] == [2, 2, 6, 2]


@pytest.mark.slow
def test_stock_mmpretrain_xcit_config_and_get_model_swap_by_type(tmp_path):
    """Failure 2: ``embed_dims`` given twice, in a config and through ``get_model``."""
    cfg = _swapped(tmp_path, 'mmpretrain::xcit/xcit-small-12-p16_8xb128_in1k.py', 'ConditionedXCiT',
                   None)
    with meta_build():
        model = build('mmpretrain', cfg)
    assert type(model) is ConditionedXCiT and model.embed_dims == 384
    assert len(model.xca_layers) == 12 and model.xca_layers[0].attn.num_heads == 8

    from mmpretrain import get_model
    model = get_model(
        'xcit-nano-12-p16_3rdparty_in1k',
        backbone=dict(type='ConditionedXCiT', conditioning=METHODS['precond']))
    assert type(model.backbone) is ConditionedXCiT and model.backbone.embed_dims == 128
    assert model.backbone.num_conditioned_attention == 12


# ------------------------------------------------------------ legacy Swin checkpoints
def _legacy(state_dict, version, prefix=''):
    """``state_dict`` of a current Swin classifier backbone in mmpretrain's older layout."""
    out, last = type(state_dict)(), prefix + 'norm1.'  # the last (2nd) stage's output norm
    for k, v in state_dict.items():
        out[prefix + 'norm.' + k[len(last):] if version < 2 and k.startswith(last) else k] = v
    out[prefix + 'stages.0.blocks.1.attn.attn_mask'] = torch.zeros(4, 16, 16)
    out._metadata = {prefix.rstrip('.'): {'version': version}}
    return out


@pytest.mark.parametrize('method', ['off', 'all'])
@pytest.mark.parametrize('version', [1, 2])
def test_legacy_swin_checkpoint_loads_as_into_the_stock_class(version, method):
    """Failure 3: ``unexpected key norm.weight ... missing norm1.weight``."""
    args = dict(arch=SWIN, img_size=32, window_size=4, out_indices=(1, ))
    torch.manual_seed(0)
    stock = SwinTransformer(**args)
    stock.eval()  # the stock Swin's eval() returns None
    ours = ConditionedSwin(**args, conditioning=METHODS[method]).eval()
    legacy = _legacy(stock.state_dict(), version)
    assert (version == 1) == ('norm.weight' in legacy)
    stock.load_state_dict(legacy, strict=True)  # the fixture is a layout the stock class reads
    res = ours.load_state_dict(_legacy(stock.state_dict(), version), strict=False)
    assert res.unexpected_keys == []
    assert all(k.endswith('.qkv.correction') for k in res.missing_keys)
    if method == 'off':
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(ours(x)[0], stock(x)[0], rtol=0, atol=0)

    # under a prefix, as in a classifier checkpoint (``backbone.norm.*``)
    class Classifier(torch.nn.Module):

        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    legacy = _legacy(Classifier(stock).state_dict(), version, prefix='backbone.')
    res = Classifier(ours).load_state_dict(legacy, strict=False)
    assert res.unexpected_keys == []
    torch.testing.assert_close(ours.norm1.weight, stock.norm1.weight, rtol=0, atol=0)


# ------------------------------------------------------------------ one line via tools
DEMO_XCIT = osp.join(REPO, 'configs/demo/mask-rcnn_xcit-n-p8_precond_fpn_shapes.py')


def _run(script, argv, cwd, env=None):
    """Run a tool: (exit status, its stderr lines). Python warnings (mmcv's about conv bias
    while building) are switched off: what is counted is the error output."""
    r = run_tool([script, *argv], cwd=cwd, env=dict(env or {}, PYTHONWARNINGS='ignore'))
    return r.returncode, r.stderr.strip().splitlines()


@pytest.mark.e2e
@pytest.mark.parametrize('script', ['tools/train.py', 'tools/test.py'])
def test_bad_backbone_argument_is_one_line_through_the_tools(script, coco_workspace, tmp_path):
    """Failure 5: an unknown ``arch`` printed a 241-line traceback."""
    argv = [DEMO_XCIT, '--work-dir', str(tmp_path / 'w')]
    if script == 'tools/test.py':
        ckpt = str(tmp_path / 'any.pth')
        torch.save({'state_dict': {}}, ckpt)
        argv.insert(1, ckpt)
    code, err = _run(script, argv + ['--cfg-options', 'model.backbone.arch=huge-ish'],
                     coco_workspace)
    assert code == 2 and len(err) == 1, err
    assert "unknown arch 'huge-ish'; valid archs: [" in err[0] and "'s12'" in err[0]

    code, err = _run(script, argv + ['--cfg-options', 'model.backbone.embed_dims=96'],
                     coco_workspace)
    assert code == 2 and len(err) == 1, err
    assert 'embed_dims=128' in err[0] and 'embed_dims=96' in err[0]


UNREACHABLE = 'http://127.0.0.1:9/unreachable_in1k.pth'  # port 9: refused at once
DET = {
    'xcit':
    dict(
        type='ConditionedXCiT',
        arch=dict(embed_dims=32, depth=4, num_heads=2),
        out_indices=(0, 1, 2, 3)),
    'vit':
    dict(type='ConditionedViT', arch=VIT, img_size=64),
    'swin':
    dict(
        type='ConditionedSwin',
        embed_dims=16,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 2),
        convert_weights=True),
}


@pytest.mark.parametrize('family', list(DET))
def test_unreachable_checkpoint_url_is_one_error(family, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))  # nothing cached
    init_cfg = ConfigDict(type='Pretrained', checkpoint=UNREACHABLE)  # as configs give it
    if family != 'swin':
        init_cfg['prefix'] = 'backbone.'
    model = build('mmdet', dict(DET[family], init_cfg=init_cfg))
    with pytest.raises(BackboneConfigError) as e:
        model.init_weights()
    msg = str(e.value)
    assert UNREACHABLE in msg and '--cfg-options model.backbone.init_cfg=None' in msg
    assert '\n' not in msg


@pytest.mark.e2e
def test_unreachable_checkpoint_url_is_one_line_through_train(coco_workspace, tmp_path):
    cfg = tmp_path / 'pretrained.py'
    cfg.write_text(f"_base_ = '{DEMO_XCIT}'\nmodel = dict(backbone=dict(init_cfg=dict("
                   f"_delete_=True, type='Pretrained', prefix='backbone.', "
                   f"checkpoint='{UNREACHABLE}')))\n")
    code, err = _run(
        'tools/train.py', [str(cfg), '--work-dir', str(tmp_path / 'w')],
        coco_workspace,
        env={'TORCH_HOME': str(tmp_path / 'torch')})  # nothing cached
    assert code == 2 and len(err) == 1, err
    assert UNREACHABLE in err[0] and 'model.backbone.init_cfg=None' in err[0]


class Payload:
    """A pickled object: what a checkpoint must not be able to smuggle in."""


def test_checkpoint_urls_load_with_weights_only(tmp_path, monkeypatch):
    """The file of a URL is loaded like a local checkpoint (``weights_only=True``): one that
    pickles an object is refused, where mmengine's URL loader would unpickle it."""
    from mmcondattn.compat import CheckpointError
    url = 'https://download.example.org/in1k/xcit_payload.pth'
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save({
        'state_dict': {},
        'payload': Payload()
    }, str(tmp_path / 'hub' / 'checkpoints' / 'xcit_payload.pth'))
    model = build(
        'mmdet',
        dict(DET['xcit'], init_cfg=dict(type='Pretrained', checkpoint=url, prefix='backbone.')))
    with pytest.raises(CheckpointError, match='refused to load .*Payload'):
        model.init_weights()
    assert model.init_cfg['checkpoint'] == url  # the config's value is given back
