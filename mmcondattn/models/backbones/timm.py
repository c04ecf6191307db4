"""``ConditionedTIMMBackbone``: mmpretrain's ``TIMMBackbone`` with ``conditioning``.

The timm model is built by the stock wrapper, then conditioned by
:func:`mmcondattn.condition_model` (timm's ViT / DeiT, Swin and XCiT).
"""
from typing import Optional

from mmpretrain.models.backbones import TIMMBackbone
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from mmcondattn.conditioning import condition_model, parse_conditioning, recompute_corrections
from .utils import DropInBackbone

__all__ = ['ConditionedTIMMBackbone']


@PRETRAIN_MODELS.register_module()
class ConditionedTIMMBackbone(DropInBackbone, TIMMBackbone):
    """A timm model as an mmpretrain backbone, conditioned (mmpretrain ``MODELS``); like the
    other backbones here, ``train()`` / ``eval()`` return the module.

    Args:
        model_name (str): the timm model, e.g. 'deit_tiny_patch16_224'.
        conditioning (dict, optional): see
            :func:`mmcondattn.conditioning.parse_conditioning`. Defaults to None (off).
        **kwargs: the other arguments of mmpretrain's ``TIMMBackbone`` (``pretrained``,
            ``checkpoint_path``, ``init_cfg``, ...) and timm's ``create_model``
            (``img_size``, ``drop_path_rate``, ...).
    """

    def __init__(self, model_name: str, conditioning: Optional[dict] = None, **kwargs):
        super().__init__(model_name, **kwargs)
        self.conditioning = parse_conditioning(conditioning)
        # timm's pretrained weights (pretrained=True / checkpoint_path) are loaded by now: say
        # what conditioning does to them
        trained = bool(kwargs.get('pretrained') or kwargs.get('checkpoint_path'))
        condition_model(self.timm_model, self.conditioning, report=trained)

    def init_weights(self):
        super().init_weights()  # timm's own init_weights, outside mmengine's chain
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            recompute_corrections(self)  # (a loaded checkpoint sets its own on load)
