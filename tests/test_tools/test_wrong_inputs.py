"""Every wrong input, one line (issue 24): the tools refuse a wrong backbone argument, an
unregistered ``type``, a string for a number, a runner setting out of range with one line
that names the key (exit 2, the work dir untouched); and the backbone argument checks
(:mod:`mmcondattn.models.backbones.validate`) against random wrong and valid values."""
import copy
import importlib.util
import os.path as osp

import pytest
import torch
from cond_helpers import build
from conftest import REPO, run_tool
from hypothesis import given, settings
from hypothesis import strategies as st

import mmcondattn.openmmlab  # noqa: F401  registers the conditioned backbones
from mmcondattn.models.backbones.utils import BackboneConfigError

CLS_CONFIG = osp.join(REPO, 'configs/demo/xcit-n-p8_precond_shapes-cls.py')

# --cfg-options, what the one line must say
WRONG = [
    ('model.backbone.embed_dims=66',
     ['model.backbone', 'embed_dims=66', 'multiple of', 'num_heads=4']),
    ('model.backbone.patch_size=0', ['model.backbone', 'patch_size must be 16 or 8, got 0']),
    ('model.backbone.out_indices=[9]', ['model.backbone', 'out_indices', '[-6, 6)', 'got [9]']),
    ('model.backbone.type=ConditionedXCit',
     ["model.backbone.type='ConditionedXCit'", "did you mean 'ConditionedXCiT'"]),
    ('optim_wrapper.optimizer.lr=fast',
     ['optim_wrapper.optimizer.lr must be a number', "got 'fast'"]),
    ('model.backbone.drop_path_rate=2', ['model.backbone', 'drop_path_rate', '[0, 1), got 2']),
    ('model.backbone.num_heads=0', ['model.backbone', 'num_heads', 'positive integer, got 0']),
    ('train_cfg.max_epochs=-1', ['train_cfg.max_epochs must be an integer >= 1, got -1']),
    ('model.head.type=LinearClsHed', ["model.head.type='LinearClsHed'", "'LinearClsHead'"]),
    ('optim_wrapper.optimizer.eps=tiny',
     ['optim_wrapper.optimizer.eps must be a number', "got 'tiny'"]),
    ('model.backbone.conditioning.precond.epss=1', ['model.backbone', "'epss'", "'eps'"]),
]


@pytest.fixture(scope='module')
def cls_workspace(tmp_path_factory):
    """The cwd the classification demo expects: data/shapes_imagenet32 (3 x 2 train images)."""
    from mmcondattn.datasets import make_imagenet_folder
    ws = tmp_path_factory.mktemp('ws')
    make_imagenet_folder(
        str(ws / 'data/shapes_imagenet32'), num_train_per_class=2, num_val_per_class=1, img_size=32)
    return ws


def _train_tool():
    spec = importlib.util.spec_from_file_location('train_tool', osp.join(REPO, 'tools/train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_each_wrong_input_is_one_line_and_exit_2(cls_workspace, monkeypatch, capsys):
    """tools/train.py's main in-process, one wrong --cfg-options value at a time."""
    train = _train_tool()
    monkeypatch.chdir(cls_workspace)
    for option, says in WRONG:
        work_dir = cls_workspace / 'work_dirs' / option.split('=')[0]
        with pytest.raises(SystemExit) as exit:
            train.main([CLS_CONFIG, '--work-dir', str(work_dir), '--cfg-options', option])
        err = capsys.readouterr().err.strip()
        assert exit.value.code == 2, (option, err)
        assert err.count('\n') == 0 and err.startswith('error: '), (option, err)
        assert all(s in err for s in says), (option, err)
        assert not work_dir.exists(), option  # nothing written, not even the log folder


@pytest.mark.e2e
def test_wrong_input_as_a_command(cls_workspace, tmp_path):
    """The real command: exit 2, one line on stderr, no traceback, the work dir untouched."""
    work_dir = tmp_path / 'wd'
    r = run_tool([
        'tools/train.py', CLS_CONFIG, '--work-dir',
        str(work_dir), '--cfg-options', 'model.backbone.type=ConditionedXCit'
    ],
                 cwd=cls_workspace)
    err = r.stderr.strip()
    assert r.returncode == 2, err[-3000:]
    assert err.count('\n') == 0 and 'Traceback' not in err, err
    assert "did you mean 'ConditionedXCiT'" in err
    assert not work_dir.exists()


def test_an_error_not_the_users_keeps_its_traceback_after_what_was_built(capsys):
    """An error the tools cannot attribute: its traceback stays; the line before it says
    which config key was being built."""
    from mmengine.registry import MODELS, DefaultScope

    from mmcondattn.errors import exits_cleanly

    @exits_cleanly
    def main():
        with DefaultScope.overwrite_default_scope('mmdet'):
            __config_key__, __config_node__ = 'model', dict(  # noqa: F841
                type='FPN', in_channels=[8, 8], out_channels=8, num_outs=None)
            MODELS.build(__config_node__)

    with pytest.raises(TypeError):
        main()
    assert capsys.readouterr().err.strip() == "error while building model (type='FPN'):"


# --------------------------------------------------------------------------- property tests
# Tiny forms of the six registered backbones; each is built through its registry.
TINY = {
    ('mmpretrain', 'ConditionedViT'):
    dict(
        arch=dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=16),
        img_size=32,
        patch_size=8),
    ('mmdet', 'ConditionedViT'):
    dict(
        arch=dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=16),
        img_size=32,
        patch_size=16),
    ('mmpretrain', 'ConditionedSwin'):
    dict(
        arch=dict(embed_dims=8, depths=[1, 1], num_heads=[1, 2]),
        img_size=32,
        window_size=4,
        out_indices=(1, )),
    ('mmdet', 'ConditionedSwin'):
    dict(
        embed_dims=8,
        depths=(1, 1),
        num_heads=(1, 2),
        strides=(4, 2),
        window_size=4,
        out_indices=(0, 1)),
    ('mmpretrain', 'ConditionedXCiT'):
    dict(embed_dims=16, depth=2, num_heads=2, patch_size=8, img_size=32),
    ('mmdet', 'ConditionedXCiT'):
    dict(arch=dict(embed_dims=16, depth=4, num_heads=2), patch_size=8, out_indices=(0, 1, 2, 3)),
}
# the arguments each form takes in its ``arch`` dict
IN_ARCH = {
    ('mmpretrain', 'ConditionedViT'): ('embed_dims', 'num_heads', 'num_layers'),
    ('mmdet', 'ConditionedViT'): ('embed_dims', 'num_heads', 'num_layers'),
    ('mmpretrain', 'ConditionedSwin'): ('embed_dims', 'num_heads', 'depths'),
    ('mmdet', 'ConditionedXCiT'): ('embed_dims', 'num_heads', 'depth'),
}


def _set(cfg, key, value):
    node = cfg
    *parents, last = key.split('.')
    for p in parents:
        node = node[p]
    node[last] = value


def _build(scope, name, **changes):
    cfg = copy.deepcopy(TINY[scope, name])
    for key, value in changes.items():
        _set(cfg, f'arch.{key}' if key in IN_ARCH.get((scope, name), ()) else key, value)
    return build(scope, dict(type=name, **cfg))  # in that scope: a default scope left by
    # another test would otherwise pick the other registry's form of the same name


not_numbers = st.sampled_from(['8', None, [], True])
not_positive_ints = st.one_of(
    st.integers(-64, 0),
    st.floats(0.5, 64).filter(lambda x: x != int(x)), not_numbers)
not_probabilities = st.one_of(
    st.floats(1.0001, 1e6), st.floats(-1e6, -1e-6), st.just(float('nan')), not_numbers)
not_drop_path = st.one_of(st.floats(1, 1e6), st.floats(-1e6, -1e-6), not_numbers)
FORMS = list(TINY)
# argument, wrong values, the forms that take it (None: all)
WRONG_VALUES = [
    ('embed_dims', not_positive_ints, None),
    ('num_heads', st.one_of(st.integers(-8, 0), st.sampled_from(['2', None])), 'vit, xcit'),
    ('num_heads',
     st.one_of(
         st.lists(st.integers(-3, 0), min_size=2, max_size=2), st.integers(1, 4),
         not_numbers), 'swin'),
    ('depth', not_positive_ints, 'xcit'),
    ('num_layers', not_positive_ints, 'vit'),
    ('depths',
     st.one_of(st.just([]), st.lists(st.integers(-3, 0), min_size=1, max_size=3),
               not_numbers), 'swin'),
    ('patch_size', not_positive_ints, None),
    ('img_size', not_positive_ints, 'vit, xcit, cls swin'),
    ('drop_rate', not_probabilities, None),
    ('attn_drop_rate', not_probabilities, 'xcit, det swin'),
    ('drop_path_rate', not_drop_path, None),
    ('window_size', not_positive_ints, 'swin'),
    ('mlp_ratio', st.one_of(st.floats(-8, 0), not_numbers), 'xcit, det swin'),
    ('out_indices',
     st.one_of(st.integers(8, 64), st.lists(st.integers(8, 64), min_size=1), st.just(['0'])), None),
    ('frozen_stages', st.one_of(st.integers(-64, -2), st.integers(9, 64), not_numbers), None),
]


def _takes(form, which):
    """Whether ``form`` takes an argument of WRONG_VALUES ('vit', 'det swin', 'cls swin')."""
    scope, name = form
    family, kind = name[len('Conditioned'):].lower(), 'det' if scope == 'mmdet' else 'cls'
    return which is None or any(w.strip() in (family, f'{kind} {family}') for w in which.split(','))


CASES = [(form, arg, i) for i, (arg, _, which) in enumerate(WRONG_VALUES) for form in FORMS
         if _takes(form, which)]
HYP = settings(max_examples=8, deadline=None, derandomize=True)


@pytest.mark.parametrize('form,arg,case', CASES, ids=[f'{s}-{n}-{a}' for (s, n), a, _ in CASES])
@HYP
@given(data=st.data())
def test_wrong_backbone_argument_is_named(form, arg, case, data):
    value = data.draw(WRONG_VALUES[case][1], label=arg)
    with pytest.raises(BackboneConfigError) as e:
        _build(*form, **{arg: value})
    message = str(e.value)
    assert (f'{arg} must be' in message or f'{arg}=' in message) and '\n' not in message, message


@pytest.mark.parametrize('form', FORMS, ids=[f'{s}-{n}' for s, n in FORMS])
@HYP
@given(data=st.data())
def test_heads_must_divide_the_channels(form, data):
    heads = data.draw(st.integers(2, 6), label='heads')
    dims = heads * data.draw(st.integers(2, 4)) + data.draw(st.integers(1, heads - 1))
    changes = dict(embed_dims=dims)
    if form[1] == 'ConditionedSwin':
        changes['num_heads'] = [1, heads]  # stage 1 has 2 * embed_dims channels
        dims *= 2
    else:
        changes['num_heads'] = heads
    if dims % heads == 0:  # Swin's doubling made it a multiple
        return
    with pytest.raises(BackboneConfigError, match='not a multiple|does not divide'):
        _build(*form, **changes)


@pytest.mark.parametrize('form', FORMS, ids=[f'{s}-{n}' for s, n in FORMS])
@HYP
@given(data=st.data())
def test_valid_arguments_still_build_and_run(form, data):
    """Values inside every range the checks allow build, train() (frozen stages) and give
    one output per index."""
    scope, name = form
    heads = data.draw(st.sampled_from([1, 2, 4]), label='heads')
    changes = dict(
        drop_rate=data.draw(st.floats(0, 1), label='drop_rate'),
        drop_path_rate=data.draw(st.floats(0, 0.999), label='drop_path_rate'),
        embed_dims=heads * data.draw(st.integers(4, 6), label='dims per head'),
        num_heads=[heads, heads] if name == 'ConditionedSwin' else heads)
    if name == 'ConditionedSwin':
        n, negative, frozen_max = 2, False, 1 if scope == 'mmpretrain' else 2
    elif name == 'ConditionedViT':
        n, negative, frozen_max = 2, True, 2
    elif scope == 'mmpretrain':  # XCiT classifier: 2 XCA + 2 class-attention blocks
        n, negative, frozen_max = 4, True, 5
    else:
        n, negative, frozen_max = 4, True, 4
    low = -n if negative else 0
    if (scope, name) == ('mmdet', 'ConditionedXCiT'):
        out = data.draw(
            st.lists(st.integers(low, n - 1), min_size=4, max_size=4, unique_by=lambda i: i % n))
    elif (scope, name) == ('mmpretrain', 'ConditionedXCiT'):  # class token outputs
        out = [data.draw(st.sampled_from([2, 3, -1, -2]), label='out_indices')]
    elif (scope, name) == ('mmdet', 'ConditionedViT'):
        out = [data.draw(st.integers(low, n - 1), label='out_indices')]
    else:
        out = data.draw(
            st.lists(st.integers(low, n - 1), min_size=1, max_size=n, unique_by=lambda i: i % n),
            label='out_indices')
    changes.update(out_indices=out, frozen_stages=data.draw(st.integers(-1, frozen_max)))
    model = _build(scope, name, **changes).train()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert len(outs) == (4 if scope == 'mmdet' and name != 'ConditionedSwin' else len(out))
