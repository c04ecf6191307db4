"""Conditioned Swin Transformer: the stock Swin backbones with conditioning.

Two forms, one name (``ConditionedSwin``):

- classification, in mmpretrain's ``MODELS``: mmpretrain's ``SwinTransformer``;
- detection, in mmdet's ``MODELS``: mmdet's ``SwinTransformer`` (strides 4, 8, 16, 32 from
  ``out_indices=(0, 1, 2, 3)``), with mmpretrain's ``arch`` presets.

Both keep the stock state-dict keys (spectral conditioning adds ``*.qkv.correction``), which
are the same in both forms apart from the output norms (the classifier has ``norm3`` only).
"""
from typing import Optional

from mmdet.models.backbones import SwinTransformer as DetSwinTransformer
from mmdet.registry import MODELS as DET_MODELS
from mmengine.model import BaseModule
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from mmcondattn.conditioning import recompute_corrections
from .utils import ReturnsSelfOnTrain, attach_conditioning, check_arch

__all__ = ['ConditionedSwin', 'ConditionedSwinDet']

SWIN_REQUIRED = ('embed_dims', 'depths', 'num_heads')


@PRETRAIN_MODELS.register_module()
class ConditionedSwin(ReturnsSelfOnTrain, SwinTransformer):
    """Swin classifier backbone with conditioning (mmpretrain ``MODELS``).

    Args:
        arch (str | dict): 'tiny', 'small', 'base' (or 'large'; mmpretrain's presets) or a
            dict with ``embed_dims``, ``depths``, ``num_heads``. Defaults to 'tiny'.
        conditioning (dict, optional): see
            :func:`mmcondattn.conditioning.parse_conditioning`. Defaults to None (off).
            Attention: every window attention; tokens: the patch-embedding tokens (all
            windows of an image together).
        **kwargs: the other arguments of mmpretrain's ``SwinTransformer``.
    """

    def __init__(self, arch='tiny', conditioning: Optional[dict] = None, **kwargs):
        check_arch(arch, self.arch_zoo, SWIN_REQUIRED, type(self).__name__)
        super().__init__(arch=arch, **kwargs)
        attach_conditioning(self, conditioning, self.patch_embed, self.drop_after_pos)


@DET_MODELS.register_module(name='ConditionedSwin')
class ConditionedSwinDet(ReturnsSelfOnTrain, DetSwinTransformer):
    """Swin detection backbone with conditioning (mmdet ``MODELS``, name ``ConditionedSwin``).

    Args:
        arch (str | dict): as :class:`ConditionedSwin` (replaces mmdet's ``embed_dims``,
            ``depths``, ``num_heads``). Defaults to 'tiny'.
        conditioning (dict, optional): as :class:`ConditionedSwin`. Defaults to None.
        **kwargs: the other arguments of mmdet's ``SwinTransformer`` (``out_indices``
            default (0, 1, 2, 3), ``drop_path_rate``, ``with_cp``, ``init_cfg``, ...).

    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` loads through
    mmengine (which reports missing / unexpected keys, e.g. ``norm0``-``norm2`` that a
    classifier lacks); with ``convert_weights=True`` (an official Swin checkpoint) mmdet's
    own loader runs, as in the stock class.
    """
    arch_zoo = SwinTransformer.arch_zoo

    def __init__(self, arch='tiny', conditioning: Optional[dict] = None, **kwargs):
        settings = check_arch(arch, self.arch_zoo, SWIN_REQUIRED, type(self).__name__)
        super().__init__(embed_dims=settings['embed_dims'], depths=settings['depths'],
                         num_heads=settings['num_heads'], **kwargs)
        attach_conditioning(self, conditioning, self.patch_embed, self.drop_after_pos)

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' and not self.convert_weights:
            BaseModule.init_weights(self)  # honours `prefix`, reports key mismatches
        else:
            super().init_weights()  # mmdet's: outside mmengine's init_weights chain, so
            recompute_corrections(self)  # refresh svd corrections from the new weights
