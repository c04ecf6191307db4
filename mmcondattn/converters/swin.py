"""Swin Transformer checkpoints (official microsoft/Swin-Transformer or timm) -> our keys.

The backbone layout is the one mmpretrain's and mmdet's ``SwinTransformer`` share (and so
both forms of ``ConditionedSwin``). Differences handled here:

- ``layers.i`` -> ``stages.i``, ``attn.*`` -> ``attn.w_msa.*``, ``mlp.fc1/fc2`` ->
  ``ffn.layers.0.0/1``, ``patch_embed.proj`` -> ``patch_embed.projection``;
- patch merging: official checkpoints hold it at the end of stage i (``layers.i.downsample``)
  like mmdet, timm >= 0.9 at the start of stage i + 1; both go to ``stages.i.downsample``.
  Its 4C input channels are concatenated as (x00, x10, x01, x11) there but in ``nn.Unfold``
  order (channel-major, then x00, x01, x10, x11) here: the reduction weight's columns and the
  norm's entries are permuted accordingly (as mmdet's ``swin_converter`` does);
- ``relative_position_index`` (not saved by timm) is regenerated from the bias-table size;
  official ``attn_mask`` buffers are dropped (recomputed from the input size);
- final ``norm`` -> ``norm3`` (the last stage's output norm), ``head`` / ``head.fc`` ->
  ``head.fc`` (``LinearClsHead``).
"""
import re

import torch

from .common import Rule, StateDict, add_prefix, apply_rules, split_prefix

__all__ = ['convert_swin', 'relative_position_index']

_S = r'layers\.(\d+)\.blocks\.(\d+)\.'
_P = r'(weight|bias)'


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into the (2·window - 1)² bias table (official formula)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing='ij')).flatten(1)  # (2, w²)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (w², w², 2)
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def _unfold_order(v: torch.Tensor) -> torch.Tensor:
    """Permute the 4C input axis (last) from (x00, x10, x01, x11) concat to Unfold order."""
    c4 = v.shape[-1]
    v = v.reshape(*v.shape[:-1], 4, c4 // 4)[..., [0, 2, 1, 3], :]  # (.., 4, C): x00 x01 x10 x11
    return v.transpose(-1, -2).reshape(*v.shape[:-2], c4)  # channel-major


def convert_swin(state_dict: StateDict) -> StateDict:
    """Convert an official or timm Swin classifier state dict.

    Returns:
        ``backbone.*`` + ``head.fc.*``.

    Raises:
        ConversionError: listing the keys that have no mapping.
    """
    official = any(k.startswith('layers.0.downsample.') for k in state_dict)
    shift = 0 if official else -1  # which stage owns ``layers.i.downsample``
    stages = {int(m.group(1)) for m in map(re.compile(r'layers\.(\d+)\.').match, state_dict) if m}
    last = max(stages) if stages else 0

    def merge(m, v):
        stage, part, name = int(m.group(1)) + shift, m.group(2), m.group(3)
        return [(f'stages.{stage}.downsample.{part}.{name}', _unfold_order(v))]

    rules = [
        Rule(rf'patch_embed\.proj\.{_P}', r'patch_embed.projection.\1'),
        Rule(rf'patch_embed\.norm\.{_P}', r'patch_embed.norm.\1'),
        Rule(rf'{_S}(norm[12])\.{_P}', r'stages.\1.blocks.\2.\3.\4'),
        Rule(rf'{_S}attn\.(qkv|proj)\.{_P}', r'stages.\1.blocks.\2.attn.w_msa.\3.\4'),
        Rule(rf'{_S}attn\.(relative_position_bias_table|relative_position_index)',
             r'stages.\1.blocks.\2.attn.w_msa.\3'),
        Rule(rf'{_S}attn_mask', None),
        Rule(rf'{_S}mlp\.fc1\.{_P}', r'stages.\1.blocks.\2.ffn.layers.0.0.\3'),
        Rule(rf'{_S}mlp\.fc2\.{_P}', r'stages.\1.blocks.\2.ffn.layers.1.\3'),
        Rule(r'layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)', merge),
        Rule(rf'norm\.{_P}', rf'norm{last}.\1'),
    ]
    head, body = split_prefix(state_dict, 'head.', keep_prefix=True)
    backbone = apply_rules(body, rules, 'Swin')
    for key, table in list(backbone.items()):  # timm does not save the index buffer
        index_key = key.replace('bias_table', 'index')
        if key.endswith('relative_position_bias_table') and index_key not in backbone:
            window = (int(round(table.shape[0]**0.5)) + 1) // 2
            backbone[index_key] = relative_position_index(window)
    out = add_prefix(backbone, 'backbone.')
    out.update(apply_rules(head, [Rule(rf'head\.(?:fc\.)?{_P}', r'head.fc.\1')], 'Swin head'))
    return out
