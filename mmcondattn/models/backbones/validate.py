"""The conditioned backbones' arguments, checked before the stock class sees them.

The stock classes meet a wrong value with an ``AssertionError``, a ``ZeroDivisionError``, a
shape error at the first forward pass, or not at all (``drop_path_rate=2`` trains). Called
first in every conditioned backbone's ``__init__``, :func:`check_backbone_args` raises one
:class:`~.utils.BackboneConfigError` instead, whose message names the argument, its value and
what is valid (``tools/train.py`` / ``tools/test.py`` print it as one line).

Table-driven: :data:`RULES` says what each argument may be, in every form that takes it;
:data:`FORMS` what differs between the forms (the stock class, whose defaults stand for what
is not given; what ``out_indices`` counts; the range of ``frozen_stages``; the patch sizes
the form builds); then the relations between arguments (heads divide the channels, Swin's
per-stage lists agree, XCiT's patch embedding and class-token outputs). Arguments a form does
not take are left to
:func:`~.utils.check_kwargs`, an ``arch`` that is no preset nor dict to
:func:`~.utils.check_arch`.
"""
import inspect
import numbers
from typing import Any, Callable, Dict, NamedTuple, Tuple

from mmdet.models.backbones import SwinTransformer as DetSwinTransformer
from mmpretrain.models.backbones import SwinTransformer, VisionTransformer, XCiT

from .utils import BackboneConfigError

__all__ = ['check_backbone_args', 'RULES', 'FORMS']


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _ints(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_int(x) and x > 0 for x in v)


class Rule(NamedTuple):
    test: Callable[[Any], bool]
    valid: str  # what is valid, for the message


POSITIVE_INT = Rule(lambda v: _int(v) and v > 0, 'a positive integer')
SIZE = Rule(lambda v: (_int(v) and v > 0) or (_ints(v) and len(v) == 2),
            'a positive integer or an (h, w) pair of them')
PROBABILITY = Rule(lambda v: _num(v) and 0 <= v <= 1, 'a probability in [0, 1]')

# argument -> what it may be, in every form that takes it
RULES: Dict[str, Rule] = {
    'embed_dims': POSITIVE_INT,
    'num_layers': POSITIVE_INT,  # ViT (in arch)
    'depth': POSITIVE_INT,  # XCiT
    'feedforward_channels': POSITIVE_INT,
    'in_channels': POSITIVE_INT,
    'window_size': POSITIVE_INT,
    'cls_attn_layers': Rule(lambda v: _int(v) and v >= 0, 'an integer >= 0'),
    'depths': Rule(_ints, 'a non-empty list of positive integers, one per stage'),
    'strides': Rule(_ints, 'a non-empty list of positive integers, one per stage'),
    'img_size': SIZE,
    'pretrain_img_size': SIZE,
    'patch_size': SIZE,
    'mlp_ratio': Rule(lambda v: _num(v) and v > 0, 'a positive number'),
    'drop_rate': PROBABILITY,
    'attn_drop_rate': PROBABILITY,
    # 1 would make the deepest block's DropPath divide by 1 - p = 0 (NaN while training)
    'drop_path_rate': Rule(lambda v: _num(v) and 0 <= v < 1, 'a probability in [0, 1)'),
}
# num_heads: one per backbone, or one per stage (Swin)
HEADS = POSITIVE_INT
STAGE_HEADS = Rule(_ints, 'a non-empty list of positive integers, one per stage')

Get = Callable[[str], Any]


class Form(NamedTuple):
    """What one conditioned class's arguments mean."""
    stock: type  # its defaults stand for what is not given
    blocks: Callable[[Get], Tuple[int, str]]  # what out_indices counts: number, in words
    negative: bool  # out_indices < 0 count from the end (as in the stock class)
    frozen_max: Callable[[int], int]  # largest frozen_stages, from the number of blocks
    staged: bool = False  # Swin: depths / num_heads per stage
    patch_sizes: Tuple[int, ...] = ()  # the only patch sizes it builds, if limited
    fixed: Dict[str, Any] = {}  # stock arguments this form always passes
    out_count: int = 0  # the number of out_indices it needs, if fixed


def _vit_blocks(get: Get):
    n = get('num_layers')
    return n, f'{n} blocks'


def _xcit_blocks(get: Get):
    depth, ca = get('depth'), get('cls_attn_layers')
    return depth + ca, f'{depth} XCA blocks' + (f' + {ca} class-attention blocks' if ca else '')


def _swin_stages(get: Get):
    n = len(get('depths'))
    return n, f'{n} stages'


# keyed by class name (looked up along the MRO: a user's subclass gets its parent's form)
FORMS: Dict[str, Form] = {
    'ConditionedViT': Form(VisionTransformer, _vit_blocks, True, lambda n: n),
    'ConditionedViTDet': Form(VisionTransformer, _vit_blocks, True, lambda n: n,
                              patch_sizes=(16, 8)),
    'ConditionedSwin': Form(SwinTransformer, _swin_stages, False, lambda n: n - 1, staged=True),
    'ConditionedSwinDet': Form(DetSwinTransformer, _swin_stages, False, lambda n: n, staged=True),
    'ConditionedXCiT': Form(XCiT, _xcit_blocks, True, lambda n: n + 1, patch_sizes=(16, 8)),
    'ConditionedXCiTDet': Form(XCiT, _xcit_blocks, True, lambda n: n, patch_sizes=(16, 8),
                               fixed=dict(cls_attn_layers=0, out_type='featmap'), out_count=4),
}  # yapf: disable


# what an arch dict must set (check_arch says so when it lacks one)
ARCH_KEYS = {
    VisionTransformer: ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'),
    SwinTransformer: ('embed_dims', 'depths', 'num_heads'),
    DetSwinTransformer: ('embed_dims', 'depths', 'num_heads'),
    XCiT: ('embed_dims', 'depth', 'num_heads'),
}


def _form(cls: type) -> Form:
    for c in cls.__mro__:
        if c.__name__ in FORMS:
            return FORMS[c.__name__]
    raise KeyError(f'no argument checks for {cls.__name__}; add its form to FORMS')


def _accepted(cls: type, stock: type) -> set:
    names = set()
    for fn in (cls.__init__, stock.__init__):
        names |= {
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
    return names - {'self'}


def check_backbone_args(backbone, **args) -> None:
    """Check the arguments a conditioned backbone was given (``backbone``: the instance
    being built, or its class), before the stock class is.

    ``args``: every argument as given, ``arch`` included; the values an ``arch`` preset or
    dict sets are checked as well (an ``arch`` dict's as ``arch.<name>``), those not given
    stand at the stock class's defaults.

    Raises:
        BackboneConfigError: one line naming the argument, its value and what is valid.
    """
    cls = backbone if isinstance(backbone, type) else type(backbone)
    owner, form = cls.__name__, _form(cls)
    accepted = _accepted(cls, form.stock)
    given = {k: (k, v) for k, v in args.items() if k in accepted and k != 'arch'}
    arch = args.get('arch')
    if isinstance(arch, str):
        preset = getattr(cls, 'arch_zoo', {}).get(arch.lower(), {})
        settings = {k: (f'{k} (arch={arch!r})', v) for k, v in preset.items()}
    elif isinstance(arch, dict):
        settings = {k: (f'arch.{k}', v) for k, v in arch.items()}
    else:
        settings = {}
    known = {**settings, **given}  # explicit values win (a clash is resolve_arch's error)

    def fail(name, value, valid):
        raise BackboneConfigError(f'{owner}: {name} must be {valid}, got {value!r}')

    for name, (label, value) in known.items():
        rule = _rule(form, name)
        if rule is not None and not rule.test(value):
            fail(label, value, rule.valid)

    def get(name):
        if name in known:
            return known[name][1]
        if name in form.fixed:
            return form.fixed[name]
        param = inspect.signature(form.stock.__init__).parameters.get(name)
        if param is None or isinstance(arch, dict) and name in ARCH_KEYS[form.stock]:
            raise _Unresolved  # set by an arch that is no preset nor complete dict: check_arch
        return param.default

    def label(name):
        return known[name][0] if name in known else f'{name} (default)'

    def seq(v):
        return list(v) if isinstance(v, (list, tuple)) else v

    if any(k in settings and seq(settings[k][1]) != seq(v) for k, (_, v) in given.items()):
        return  # arch and an explicit value disagree: resolve_arch says so
    try:
        _check_relations(owner, form, get, label, fail)
    except _Unresolved:
        pass


def _rule(form: Form, name: str):
    if name == 'num_heads':
        return STAGE_HEADS if form.staged else HEADS
    if name == 'patch_size' and form.patch_sizes:
        sizes = form.patch_sizes
        return Rule(lambda v: _int(v) and v in sizes, ' or '.join(map(str, sizes)))
    return RULES.get(name)


class _Unresolved(Exception):
    """An architecture value that the ``arch`` given does not set."""


def _check_relations(owner: str, form: Form, get: Get, label, fail) -> None:
    patch = get('patch_size')
    if form.stock is XCiT:  # the stock class divides the image into whole patches
        size = get('img_size')
        if any(s % patch for s in ((size, size) if _int(size) else size)):
            fail(label('img_size'), size, f'a multiple of patch_size={patch}')
        if get('embed_dims') < patch // 2:  # its patch embedding's first conv: dims // (p / 2)
            fail(
                label('embed_dims'), get('embed_dims'),
                f'at least {patch // 2} with patch_size={patch} (the convolutional patch '
                f'embedding starts with embed_dims // {patch // 2} channels)')
    if form.staged:
        _check_stages(owner, get, label, is_det=form.stock is DetSwinTransformer)
    else:
        _check_heads(owner, get('embed_dims'), get('num_heads'), label)
    _check_indices(owner, form, get, fail)


def _check_heads(owner: str, dims: int, heads: int, label) -> None:
    if dims % heads:
        lower = dims // heads * heads
        near_dims = ' or '.join(str(d) for d in (lower, lower + heads) if d > 0)
        divisors = [d for d in range(1, dims + 1) if dims % d == 0]
        near_heads = ' or '.join(
            str(d) for d in (max(d for d in divisors if d < heads),
                             min((d for d in divisors if d > heads), default=None)) if d)
        raise BackboneConfigError(
            f'{owner}: {label("embed_dims")}={dims} is not a multiple of '
            f'{label("num_heads")}={heads}: each head takes embed_dims / num_heads channels '
            f'(valid near it: embed_dims {near_dims}, or num_heads {near_heads})')


def _check_stages(owner: str, get: Get, label, is_det: bool) -> None:
    depths, heads = get('depths'), get('num_heads')
    if len(depths) != len(heads):
        raise BackboneConfigError(
            f'{owner}: {label("depths")}={list(depths)!r}, {label("num_heads")}='
            f'{list(heads)!r} must have one entry per stage each (the same length)')
    if is_det and len(get('strides')) < len(depths):  # extra strides are unused, as in stock
        raise BackboneConfigError(
            f'{owner}: {label("strides")}={list(get("strides"))!r} needs an entry per stage: '
            f'at least {len(depths)} for {label("depths")}={list(depths)!r}')
    if is_det and get('strides')[0] != get('patch_size'):
        raise BackboneConfigError(
            f'{owner}: {label("strides")}={list(get("strides"))!r} must start with '
            f'{label("patch_size")}={get("patch_size")!r} (the patch embedding\'s stride)')
    dims = get('embed_dims')
    for i, h in enumerate(heads):  # each stage doubles the channels
        if dims * 2**i % h:
            raise BackboneConfigError(
                f'{owner}: {label("num_heads")}={list(heads)!r} does not divide the channels '
                f'of stage {i}: {dims * 2**i} ({label("embed_dims")}={dims} * 2**{i}) is not '
                f'a multiple of {h}; each head takes channels / num_heads')


def _check_indices(owner: str, form: Form, get: Get, fail) -> None:
    n, what = form.blocks(get)
    out = get('out_indices')
    if out is not None:
        low = -n if form.negative else 0
        indices = [out] if _int(out) and form.negative else out
        if not (isinstance(indices, (list, tuple)) and all(_int(i) for i in indices)) or \
                not all(low <= i < n for i in indices) or \
                form.out_count and len(indices) != form.out_count:
            kind = f'{form.out_count} block indices' if form.out_count else \
                'an index or a list of indices' if form.negative else 'a list of indices'
            fail('out_indices', out, f'{kind} in [{low}, {n}) ({what})')
        depth = get('depth') if form.stock is XCiT else 0
        if depth and get('out_type') == 'cls_token' and \
                any(i % n < depth for i in ([out] if _int(out) else out)):
            fail(
                'out_indices', out, f"indices of class-attention blocks, in [{depth}, {n}) or "
                f"[{depth - n}, 0), with out_type='cls_token' (an XCA block has no class "
                "token; or give out_type='featmap')")
    frozen = get('frozen_stages')
    top = form.frozen_max(n)
    if not (_int(frozen) and -1 <= frozen <= top):
        fail('frozen_stages', frozen, f'an integer in [-1, {top}] (-1: none frozen)')
