"""timm-format ViT / DeiT state dicts -> this package's keys (mmpretrain layout).

Source: ``timm.models.vision_transformer.VisionTransformer.state_dict()`` (class token,
learned position embedding, pre-norm blocks, optional LayerScale ``ls1`` / ``ls2``, final
``norm``, ``head``). Output: an mmpretrain ``ImageClassifier`` state dict, ``backbone.*`` in
the layout of ``ConditionedViT`` / mmpretrain ``VisionTransformer`` and ``head.layers.head.*``
(``VisionTransformerClsHead``, the head of mmpretrain's ViT / DeiT configs). Models with
parts the stock backbone lacks (distillation token, ``fc_norm``, qk-norm, register tokens)
are refused with the list of those keys.
"""
from .common import Rule, StateDict, add_prefix, apply_rules, split_prefix

__all__ = ['convert_vit', 'vit_backbone_rules']

_B = r'blocks\.(\d+)\.'
_P = r'(weight|bias)'


def vit_backbone_rules():
    """Rules for the backbone keys (no prefix) of a timm ViT."""
    return [
        Rule(r'(cls_token|pos_embed)', r'\1'),
        Rule(rf'patch_embed\.proj\.{_P}', r'patch_embed.projection.\1'),
        Rule(rf'{_B}norm1\.{_P}', r'layers.\1.ln1.\2'),
        Rule(rf'{_B}norm2\.{_P}', r'layers.\1.ln2.\2'),
        Rule(rf'{_B}attn\.(qkv|proj)\.{_P}', r'layers.\1.attn.\2.\3'),
        Rule(rf'{_B}mlp\.fc1\.{_P}', r'layers.\1.ffn.layers.0.0.\2'),
        Rule(rf'{_B}mlp\.fc2\.{_P}', r'layers.\1.ffn.layers.1.\2'),
        Rule(rf'{_B}ls1\.gamma', r'layers.\1.attn.gamma1.weight'),
        Rule(rf'{_B}ls2\.gamma', r'layers.\1.ffn.gamma2.weight'),
        Rule(rf'norm\.{_P}', r'ln1.\1'),
    ]


def convert_vit(state_dict: StateDict) -> StateDict:
    """Convert a timm ViT / DeiT classifier state dict.

    Returns:
        ``backbone.*`` + ``head.layers.head.*``.

    Raises:
        ConversionError: listing the keys that have no mapping.
    """
    head, body = split_prefix(state_dict, 'head.', keep_prefix=True)
    out = add_prefix(apply_rules(body, vit_backbone_rules(), 'timm ViT'), 'backbone.')
    out.update(apply_rules(head, [Rule(rf'head\.{_P}', r'head.layers.head.\1')], 'timm ViT head'))
    return out
