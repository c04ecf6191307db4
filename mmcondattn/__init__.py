"""mmcondattn: conditioned attention for MMDetection, MMPretrain and timm backbones.

:func:`condition_model` conditions a built model, :func:`fold_conditioning` folds spectral
corrections; both need torch alone, as do :mod:`mmcondattn.measure` (κ of attention layers)
and the converters.

Registration does not depend on import order: ``import mmcondattn`` imports the OpenMMLab
part (:mod:`mmcondattn.openmmlab`: stack check, registration in mmdet's, mmpretrain's and
mmengine's registries, checkpoint shims) whenever the OpenMMLab stack is installed, whether
mmengine / mmdet / mmpretrain were imported before or are imported after. Where mmengine is
not installed, nothing of it is imported (found with ``importlib.util.find_spec``, which
imports nothing) and the package is torch-only. Where mmengine is installed but the stack
does not import (mmcv without its ops, a torchvision for another torch, mmdet or mmpretrain
missing: :class:`StackError` and the like), the error is raised if mmengine is already
imported (a config's ``custom_imports``, the tools: they need the registration and get the
one-line error), and otherwise only warned about, so that a torch / timm user whose mm*
install is broken can still use the torch-only part; ``import mmcondattn.openmmlab`` then
raises the error.
"""
import importlib
import importlib.util
import sys
import warnings

from .conditioning import condition_model, fold_conditioning
from .stack import FIX, StackError, check_stack
from .version import __version__

__all__ = ['__version__', 'condition_model', 'fold_conditioning', 'StackError', 'check_stack']

# what mmcondattn.openmmlab imports (mmengine decides whether the stack is there at all)
OPENMMLAB_PACKAGES = ('mmengine', 'mmcv', 'mmdet', 'mmpretrain')


def _installed(name: str) -> bool:
    """Whether ``name`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-initialised module
        return False


def _import_openmmlab() -> bool:
    """Import :mod:`mmcondattn.openmmlab` where the OpenMMLab stack is installed (see the
    module docstring for the rule). Returns whether the OpenMMLab part is registered."""
    if not _installed('mmengine'):
        return False
    in_use = 'mmengine' in sys.modules  # a config or tool imports us: errors must stop it
    try:
        missing = [name for name in OPENMMLAB_PACKAGES[1:] if not _installed(name)]
        if missing:
            raise StackError(f'{", ".join(missing)} not installed: the OpenMMLab part of '
                             'mmcondattn needs mmengine, mmcv (with its ops), mmdet and '
                             f'mmpretrain; {FIX}')
        importlib.import_module('.openmmlab', __name__)
    except Exception as e:
        if in_use:
            raise
        first = str(e).splitlines()[0] if str(e) else ''
        warnings.warn(
            f'mmcondattn: the OpenMMLab stack is installed but does not import '
            f'({type(e).__name__}: {first}); nothing is registered in mmdet / mmpretrain, '
            f'the torch-only part works (import mmcondattn.openmmlab to raise the error)',
            stacklevel=3)
        return False
    return True


_import_openmmlab()
