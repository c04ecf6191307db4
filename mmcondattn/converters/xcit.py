"""XCiT checkpoints (official facebookresearch/xcit or timm) -> this package's keys.

Handles three source layouts, told apart by their keys:

- official ImageNet classifier (``pos_embeder.*``, fused ``cls_attn_blocks.*.attn.qkv``,
  ``head.*``; usually under ``'model'``);
- timm ``Xcit.state_dict()`` (``pos_embed.*``, split ``attn.q`` / ``k`` / ``v``);
- official COCO Mask R-CNN (mmdet 2.x) checkpoint: ``backbone.{patch_embed, pos_embeder,
  blocks, fpn1..fpn4}.*`` plus neck / head keys.

Classifiers become an mmpretrain ``ImageClassifier`` state dict (``backbone.*`` in the
layout of ``ConditionedXCiT`` / mmpretrain ``XCiT``, ``head.fc.*`` for a ``LinearClsHead``);
the detection checkpoint becomes an mmdet state dict whose ``backbone.*`` follows the
detection ``ConditionedXCiT`` (``fpnN`` -> ``pyramid.fpnN``); its neck and head keys are
kept as they are (mmdet 3.x uses the same names for Mask R-CNN's FPN, RPN and RoI heads).
"""
import re
from typing import Iterable

from .common import Rule, StateDict, add_prefix, apply_rules, split_prefix

__all__ = [
    'convert_xcit', 'convert_xcit_backbone', 'is_source_xcit_backbone', 'xcit_backbone_rules'
]

# backbone keys only the official / timm layouts have (ours: xca_layers, ca_layers, pyramid)
_SOURCE_KEY = re.compile(r'(blocks|cls_attn_blocks|pos_embeder|fpn[1-4])\.')

_B = r'blocks\.(\d+)\.'
_CA = r'cls_attn_blocks\.(\d+)\.'
_P = r'(weight|bias)'
_BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'


def _patch_conv(m, v):
    # official / timm: proj.{0,2,4,6} = Sequential(conv, BN) with GELU in between
    # mmpretrain:      proj.{0,1,2,3} = ConvModule(conv, bn, act)
    idx, sub, name = int(m.group(1)), m.group(2), m.group(3)
    return [(f'patch_embed.proj.{idx // 2}.{"conv" if sub == "0" else "bn"}.{name}', v)]


def _split_qkv(m, v):
    # official class attention has a fused qkv; mmpretrain has separate q, k, v (3D, ...)
    i, name = m.group(1), m.group(2)
    return [(f'ca_layers.{i}.attn.{t}.{name}', part) for t, part in zip('qkv', v.chunk(3, 0))]


def xcit_backbone_rules(with_pyramid: bool = False):
    """Rules for the backbone keys (no prefix) of an official or timm XCiT."""
    rules = [
        Rule(r'cls_token', 'cls_token'),
        Rule(rf'pos_embed(?:er)?\.token_projection\.{_P}', r'pos_embed.token_projection.conv.\1'),
        Rule(rf'patch_embed\.proj\.(\d+)\.([01])\.{_BN}', _patch_conv),
        Rule(rf'{_B}(norm[123])\.{_P}', r'xca_layers.\1.\2.\3'),
        Rule(rf'{_B}attn\.(qkv|proj)\.{_P}', r'xca_layers.\1.attn.\2.\3'),
        Rule(rf'{_B}attn\.temperature', r'xca_layers.\1.attn.temperature'),
        Rule(rf'{_B}local_mp\.(conv[12])\.{_P}', r'xca_layers.\1.local_mp.\2.conv.\3'),
        Rule(rf'{_B}local_mp\.bn\.{_BN}', r'xca_layers.\1.local_mp.conv1.bn.\2'),
        Rule(rf'{_B}mlp\.fc1\.{_P}', r'xca_layers.\1.ffn.layers.0.0.\2'),
        Rule(rf'{_B}mlp\.fc2\.{_P}', r'xca_layers.\1.ffn.layers.1.\2'),
        Rule(rf'{_B}(gamma[123])', r'xca_layers.\1.\2'),
        Rule(rf'{_CA}(norm[12])\.{_P}', r'ca_layers.\1.\2.\3'),
        Rule(rf'{_CA}attn\.qkv\.{_P}', _split_qkv),
        Rule(rf'{_CA}attn\.(q|k|v|proj)\.{_P}', r'ca_layers.\1.attn.\2.\3'),
        Rule(rf'{_CA}mlp\.fc1\.{_P}', r'ca_layers.\1.ffn.layers.0.0.\2'),
        Rule(rf'{_CA}mlp\.fc2\.{_P}', r'ca_layers.\1.ffn.layers.1.\2'),
        Rule(rf'{_CA}(gamma[12])', r'ca_layers.\1.\2'),
        Rule(rf'norm\.{_P}', r'norm.\1'),
    ]
    if with_pyramid:
        rules.append(Rule(r'(fpn[1-4]\..+)', r'pyramid.\1'))
    return rules


def is_source_xcit_backbone(keys: Iterable[str]) -> bool:
    """True if backbone ``keys`` (without a ``backbone.`` prefix) are in the official or
    timm XCiT layout rather than this package's."""
    return any(_SOURCE_KEY.match(k) for k in keys)


def convert_xcit_backbone(state_dict: StateDict, with_pyramid: bool = True) -> StateDict:
    """Convert official / timm XCiT backbone keys (no prefix) to this package's layout
    (``fpnN`` -> ``pyramid.fpnN`` with ``with_pyramid``).

    Raises:
        ConversionError: listing the keys that have no mapping.
    """
    return apply_rules(state_dict, xcit_backbone_rules(with_pyramid), 'XCiT backbone')


def convert_xcit(state_dict: StateDict) -> StateDict:
    """Convert an official / timm XCiT classifier or official XCiT Mask R-CNN state dict.

    Returns:
        classifier: ``backbone.*`` + ``head.fc.*``; detector: ``backbone.*`` + the source's
        neck / head keys unchanged.

    Raises:
        ConversionError: listing the keys that have no mapping.
    """
    if any(k.startswith('backbone.') for k in state_dict):  # official detection checkpoint
        backbone, rest = split_prefix(state_dict, 'backbone.')
        out = add_prefix(convert_xcit_backbone(backbone), 'backbone.')
        out.update(rest)  # neck, rpn_head, roi_head: same names in mmdet 3.x
        return out
    head, body = split_prefix(state_dict, 'head.', keep_prefix=True)
    out = add_prefix(apply_rules(body, xcit_backbone_rules(), 'XCiT classifier'), 'backbone.')
    out.update(apply_rules(head, [Rule(rf'head\.{_P}', r'head.fc.\1')], 'XCiT classifier head'))
    return out
