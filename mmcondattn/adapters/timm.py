"""timm's ViT / DeiT, Swin and XCiT in the adapter table of :func:`mmcondattn.condition_model`.

Attention: ``timm.layers.Attention`` (ViT, DeiT), ``swin_transformer.WindowAttention`` and
``xcit.XCA``; every forward merges the heads and calls ``proj`` right away, except an
``Attention`` with ``scale_norm`` (a norm before ``proj``) or ``gated`` (a gate before
``proj``), which precond refuses. Tokens: ViT after ``patch_embed`` or before ``pos_drop``
(class / register tokens, ``num_prefix_tokens``, left out); Swin after ``patch_embed``
(NHWC maps; no position embedding, so both positions are the same); XCiT after
``patch_embed`` (which returns ``(tokens, (Hp, Wp))``) or before ``pos_drop``.
"""
import torch.nn as nn
from timm.layers import Attention
from timm.models.swin_transformer import SwinTransformer, WindowAttention
from timm.models.vision_transformer import VisionTransformer
from timm.models.xcit import XCA, Xcit

from mmcondattn.conditioning.model import (AttentionAdapter, BackboneAdapter, register_attention,
                                           register_backbone)


def _attention_precond_error(m: Attention):
    if not isinstance(m.norm, nn.Identity):
        return f'it normalises the merged heads first (norm={type(m.norm).__name__}, scale_norm)'
    if m.gate is not None:
        return 'it gates the merged heads first (gated=True)'
    return None


register_attention(Attention, AttentionAdapter(precond_error=_attention_precond_error))
register_attention(WindowAttention)
register_attention(XCA)
register_backbone(
    VisionTransformer,
    BackboneAdapter(pos_drop='pos_drop', num_prefix_tokens=lambda m: m.num_prefix_tokens))
register_backbone(SwinTransformer, BackboneAdapter())
register_backbone(Xcit, BackboneAdapter(pos_drop='pos_drop'))
