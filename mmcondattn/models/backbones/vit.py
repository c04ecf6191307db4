"""Conditioned ViT / DeiT: mmpretrain's ``VisionTransformer`` with conditioning.

Two forms, one name (``ConditionedViT``):

- classification, in mmpretrain's ``MODELS``: the stock backbone;
- detection, in mmdet's ``MODELS``: no class token; the stride-16 (or 8) map of the last
  block (or of 4 blocks) goes through a :class:`SimplePyramid` to strides 4, 8, 16, 32
  (ViTDet's simple pyramid; the FPN neck adds the output convolutions).

Both keep the stock state-dict keys (spectral conditioning adds ``*.qkv.correction``).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS as DET_MODELS
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from mmcondattn.conditioning.model import BackboneAdapter, register_backbone
from .pyramid import SimplePyramid
from .utils import (BackboneConfigError, DropInBackbone, attach_conditioning, check_arch,
                    check_kwargs, pad_to_multiple, pop_fixed, register_classification_key_filter)
from .validate import check_backbone_args

__all__ = ['ConditionedViT', 'ConditionedViTDet']

VIT_REQUIRED = ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels')


@PRETRAIN_MODELS.register_module()
class ConditionedViT(DropInBackbone, VisionTransformer):
    """ViT / DeiT classifier backbone with conditioning (mmpretrain ``MODELS``).

    Args:
        arch (str | dict): a preset of mmpretrain's ``VisionTransformer.arch_zoo``
            ('deit-tiny', 'deit-small', 'deit-base', 'base', ...) or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads``, ``feedforward_channels``.
            Defaults to 'base'.
        conditioning (dict, optional): e.g. ``dict(tokens=dict(solver='svd'))``, see
            :func:`mmcondattn.conditioning.parse_conditioning`. Defaults to None (off).
            Tokens: the patch tokens only (the class token is left out).
        **kwargs: the other arguments of mmpretrain's ``VisionTransformer``.
    """

    def __init__(self, arch='base', conditioning: Optional[dict] = None, **kwargs):
        check_backbone_args(self, arch=arch, **kwargs)
        owner = type(self).__name__
        check_arch(arch, self.arch_zoo, VIT_REQUIRED, owner)
        check_kwargs(owner, VisionTransformer, kwargs)
        super().__init__(arch=arch, **kwargs)
        attach_conditioning(self, conditioning)


@DET_MODELS.register_module(name='ConditionedViT')
class ConditionedViTDet(DropInBackbone, VisionTransformer):
    """ViT / DeiT detection backbone with conditioning (mmdet ``MODELS``, name
    ``ConditionedViT``).

    Args:
        arch (str | dict): as :class:`ConditionedViT`. Defaults to 'base'.
        patch_size (int): 16 or 8. Defaults to 16.
        out_indices (int | Sequence[int]): 1 block (its map feeds all 4 levels, ViTDet) or
            4 blocks (one per level). Defaults to -1 (the last block, after the final norm).
        pyramid_norm_cfg (dict): norm inside ``pyramid.fpn1`` (patch 16). Defaults to
            ``dict(type='BN')``; ``dict(type='SyncBN')`` for distributed runs.
        conditioning (dict, optional): as :class:`ConditionedViT`. Defaults to None.
        **kwargs: other arguments of mmpretrain's ``VisionTransformer`` (``img_size``: the
            size the position embedding is stored for, resized on the fly; default 224).
            ``with_cls_token`` and ``out_type`` may be given, with the only values this
            form supports: False and 'featmap'.

    Shapes:
        (B, 3, H, W) -> 4 maps (B, C, H'/s, W'/s), s = 4, 8, 16, 32, C = embed dims, where
        H', W' are H, W rounded up to multiples of 32 (the input is zero-padded at the
        bottom / right, as mmdet's data preprocessor does with ``pad_size_divisor=32``).
    """

    def __init__(self,
                 arch='base',
                 patch_size: int = 16,
                 out_indices: Union[int, Sequence[int]] = -1,
                 pyramid_norm_cfg: dict = dict(type='BN'),
                 conditioning: Optional[dict] = None,
                 **kwargs):
        check_backbone_args(
            self, arch=arch, patch_size=patch_size, out_indices=out_indices, **kwargs)
        owner = type(self).__name__
        check_arch(arch, self.arch_zoo, VIT_REQUIRED, owner)
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        if len(out_indices) not in (1, 4):
            raise BackboneConfigError(f'{owner}: out_indices must name 1 or 4 blocks, got '
                                      f'{out_indices}')
        fixed = pop_fixed(owner, kwargs, dict(with_cls_token=False, out_type='featmap'))
        check_kwargs(owner, VisionTransformer, kwargs)
        super().__init__(
            arch=arch, patch_size=patch_size, out_indices=out_indices, **fixed, **kwargs)
        self.pyramid = SimplePyramid(self.embed_dims, patch_size, pyramid_norm_cfg)
        register_classification_key_filter(self, 'vit')
        attach_conditioning(self, conditioning)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = pad_to_multiple(x, SimplePyramid.strides[-1])  # (B, 3, H, W), H, W % 32 == 0
        return self.pyramid(super().forward(x))  # 1 or 4 maps (B, C, H/p, W/p) -> 4 levels


register_backbone(
    VisionTransformer,
    BackboneAdapter(pos_drop='drop_after_pos', num_prefix_tokens=lambda m: m.num_extra_tokens))
