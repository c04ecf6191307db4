"""mmcondattn: conditioned attention for MMDetection and MMPretrain backbones.

Importing the package registers its layers, backbones and hooks in mmdet's and mmpretrain's
registries and applies the shims of :mod:`mmcondattn.compat` (configs do it with
``custom_imports=dict(imports=['mmcondattn'], allow_failed_imports=False)``).
"""
from .version import __version__
from .stack import StackError, check_stack

check_stack()  # one clear error for a broken torch / torchvision / mmcv, before importing them

from .compat import apply_shims  # noqa: E402
from .conditioning import fold_conditioning  # noqa: E402
from . import models  # noqa: F401  registers into mmdet / mmpretrain MODELS
from . import engine  # noqa: F401,E402  registers ConditionMonitorHook in mmengine HOOKS

apply_shims()

__all__ = ['__version__', 'fold_conditioning', 'StackError', 'check_stack']
