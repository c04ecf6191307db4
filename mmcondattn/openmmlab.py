"""The OpenMMLab-facing part of mmcondattn: importing it checks the stack
(:func:`~mmcondattn.stack.check_stack`), registers the layers, backbones and hooks in mmdet's,
mmpretrain's and mmengine's registries, and applies the shims of :mod:`mmcondattn.compat`.

``import mmcondattn`` imports this module whenever the OpenMMLab stack is installed, in any
import order (the rule, and what a broken stack does then: :mod:`mmcondattn`'s docstring);
``import mmcondattn.openmmlab`` always does, and raises the stack's error where it is broken.
"""
from .stack import check_stack

check_stack()  # one clear error for a broken torch / torchvision / mmcv, before importing them

from . import engine, models  # noqa: E402,F401  registers into mmdet / mmpretrain / mmengine
from .compat import apply_shims  # noqa: E402

apply_shims()
