"""Checkpoint converters: public checkpoints -> this package's keys.

Pure state-dict logic (no timm, no model build); the command lines are thin wrappers in
``tools/model_converters/``. Each converter raises :class:`ConversionError` listing the
keys it cannot map instead of dropping them.

=======================  ==================================================================
function                 source
=======================  ==================================================================
``convert_xcit``         official XCiT ImageNet / COCO Mask R-CNN, timm XCiT
``convert_vit``          timm ViT / DeiT
``convert_swin``         official or timm Swin
``classifier_to_detector``  mmpretrain classifier of a (conditioned) backbone -> detection
                         backbone init
=======================  ==================================================================
"""
from .classifier_to_detector import (CLASSIFICATION_ONLY_KEYS, classifier_to_detector,
                                     drop_classification_keys)
from .common import ConversionError, load_state_dict, save_state_dict
from .swin import convert_swin
from .vit import convert_vit
from .xcit import convert_xcit

__all__ = [
    'CLASSIFICATION_ONLY_KEYS', 'ConversionError', 'classifier_to_detector', 'convert_swin',
    'convert_vit', 'convert_xcit', 'drop_classification_keys', 'load_state_dict', 'save_state_dict'
]
