"""mmcondattn: conditioned attention for MMDetection, MMPretrain and timm backbones.

``import mmcondattn`` needs torch alone: :func:`condition_model` conditions a built model,
:func:`fold_conditioning` folds spectral corrections. The OpenMMLab part
(:mod:`mmcondattn.openmmlab`: stack check, registration in mmdet's / mmpretrain's registries,
checkpoint shims) is imported with it when mmengine is already imported, as in configs
(``custom_imports=dict(imports=['mmcondattn'], allow_failed_imports=False)``) and the tools.
"""
import sys

from .conditioning import condition_model, fold_conditioning
from .stack import StackError, check_stack
from .version import __version__

if 'mmengine' in sys.modules:
    from . import openmmlab  # noqa: F401

__all__ = ['__version__', 'condition_model', 'fold_conditioning', 'StackError', 'check_stack']
