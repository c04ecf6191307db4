"""mmcondattn: conditioned attention for MMDetection and MMPretrain backbones.

Importing the package registers its layers, backbones and hooks in mmdet's and mmpretrain's
registries and applies the shims of :mod:`mmcondattn.compat` (configs do it with
``custom_imports=dict(imports=['mmcondattn'], allow_failed_imports=False)``).
"""
from .version import __version__
from .compat import apply_shims
from .conditioning import fold_conditioning
from . import models  # noqa: F401  registers into mmdet / mmpretrain MODELS

apply_shims()

__all__ = ['__version__', 'fold_conditioning']
