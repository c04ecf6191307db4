"""Conditioned backbones, each in a classification form (mmpretrain ``MODELS``) and a
detection form (mmdet ``MODELS``) registered under the same name, and timm models through
``ConditionedTIMMBackbone``."""
from .pyramid import SimplePyramid
from .swin import ConditionedSwin, ConditionedSwinDet
from .timm import ConditionedTIMMBackbone
from .vit import ConditionedViT, ConditionedViTDet
from .xcit import ConditionedXCiT, ConditionedXCiTDet

__all__ = [
    'SimplePyramid', 'ConditionedSwin', 'ConditionedSwinDet', 'ConditionedViT', 'ConditionedViTDet',
    'ConditionedXCiT', 'ConditionedXCiTDet', 'ConditionedTIMMBackbone'
]
