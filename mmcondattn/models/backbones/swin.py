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
from mmcondattn.conditioning.model import BackboneAdapter, register_backbone
from .utils import (DropInBackbone, attach_conditioning, check_arch, check_kwargs, local_pretrained,
                    resolve_arch)
from .validate import check_backbone_args

__all__ = ['ConditionedSwin', 'ConditionedSwinDet', 'upgrade_legacy_swin_keys']

SWIN_REQUIRED = ('embed_dims', 'depths', 'num_heads')


def upgrade_legacy_swin_keys(state_dict: dict, prefix: str, version: Optional[int],
                             last_stage: int) -> None:
    """What mmpretrain's ``SwinTransformer._load_from_state_dict`` does for checkpoints of
    its older layouts, in place, for the backbone under ``prefix``: version < 2 named the
    last stage's output norm ``norm`` (now ``norm{last_stage}``); version < 3 saved the
    shifted-window ``attn_mask`` buffers (now recomputed). No version (a bare state dict)
    counts as the oldest, as in the stock class."""
    if version is None or version < 2:
        for key in [k for k in state_dict if k.startswith(prefix + 'norm.')]:
            state_dict[f'{prefix}norm{last_stage}.' + key[len(prefix + 'norm.'):]] = \
                state_dict.pop(key)
    if version is None or version < 3:
        for key in [k for k in state_dict if k.startswith(prefix) and 'attn_mask' in k]:
            del state_dict[key]


@PRETRAIN_MODELS.register_module()
class ConditionedSwin(DropInBackbone, SwinTransformer):
    """Swin classifier backbone with conditioning (mmpretrain ``MODELS``).

    Args:
        arch (str | dict): 'tiny', 'small', 'base' (or 'large'; mmpretrain's presets) or a
            dict with ``embed_dims``, ``depths``, ``num_heads``. Defaults to 'tiny'.
        conditioning (dict, optional): see
            :func:`mmcondattn.conditioning.parse_conditioning`. Defaults to None (off).
            Attention: every window attention; tokens: the patch-embedding tokens (all
            windows of an image together).
        **kwargs: the other arguments of mmpretrain's ``SwinTransformer``.

    Checkpoints of mmpretrain's older Swin layouts (``norm.*``, ``attn_mask``; state-dict
    version 1 or 2) load as into the stock class (which converts them only for itself,
    ``self.__class__ is SwinTransformer``): see :func:`upgrade_legacy_swin_keys`.
    """

    def __init__(self, arch='tiny', conditioning: Optional[dict] = None, **kwargs):
        check_backbone_args(self, arch=arch, **kwargs)
        owner = type(self).__name__
        check_arch(arch, self.arch_zoo, SWIN_REQUIRED, owner)
        check_kwargs(owner, SwinTransformer, kwargs)
        super().__init__(arch=arch, **kwargs)
        attach_conditioning(self, conditioning)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        upgrade_legacy_swin_keys(state_dict, prefix, local_metadata.get('version'),
                                 len(self.stages) - 1)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


@DET_MODELS.register_module(name='ConditionedSwin')
class ConditionedSwinDet(DropInBackbone, DetSwinTransformer):
    """Swin detection backbone with conditioning (mmdet ``MODELS``, name ``ConditionedSwin``).

    Args:
        arch (str | dict, optional): a preset of mmpretrain's Swin ('tiny', 'small', 'base',
            'large') or a dict with ``embed_dims``, ``depths``, ``num_heads``: a shorthand
            for mmdet's own ``embed_dims``, ``depths``, ``num_heads``, which may be given
            instead (as in mmdet's configs) or as well (then they must agree). Defaults to
            None: mmdet's arguments, whose defaults are Swin-T's.
        conditioning (dict, optional): as :class:`ConditionedSwin`. Defaults to None.
        **kwargs: every argument of mmdet's ``SwinTransformer`` (``pretrain_img_size``,
            ``strides``, ``out_indices`` default (0, 1, 2, 3), ``drop_path_rate``,
            ``with_cp``, ``pretrained``, ``convert_weights``, ``frozen_stages``,
            ``init_cfg``, ...).

    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` loads through
    mmengine (which reports missing / unexpected keys, e.g. ``norm0``-``norm2`` that a
    classifier lacks); with ``convert_weights=True`` (an official Swin checkpoint) mmdet's
    own loader runs, as in the stock class.
    """
    arch_zoo = SwinTransformer.arch_zoo

    def __init__(self, arch=None, conditioning: Optional[dict] = None, **kwargs):
        check_backbone_args(self, arch=arch, **kwargs)
        owner = type(self).__name__
        settings = resolve_arch(owner, arch, self.arch_zoo, kwargs, SWIN_REQUIRED, SWIN_REQUIRED)
        check_kwargs(owner, DetSwinTransformer, kwargs)
        super().__init__(**settings, **kwargs)
        attach_conditioning(self, conditioning)

    def init_weights(self):
        cfg = self.init_cfg
        with local_pretrained(self):
            if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' and \
                    not self.convert_weights:
                BaseModule.init_weights(self)  # honours `prefix`, reports key mismatches
            else:
                DetSwinTransformer.init_weights(self)  # mmdet's: outside mmengine's chain
                if cfg is None:  # it re-initialised the weights: follow them (a loaded
                    recompute_corrections(self)  # checkpoint's corrections are kept)


for _cls in (SwinTransformer, DetSwinTransformer):
    register_backbone(_cls, BackboneAdapter(pos_drop='drop_after_pos'))
