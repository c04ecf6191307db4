"""How the tools report a user's mistake: :class:`UserError` and :func:`exits_cleanly`.

Torch-only (no mmengine): the GPU check's timm mode runs where the OpenMMLab stack is absent.
"""
import functools
import sys

__all__ = ['UserError', 'exits_cleanly']


class UserError(Exception):
    """A wrong input from the user; the tools print its message alone and exit with 2."""


def exits_cleanly(main):
    """Run ``main``; report a :class:`UserError`-like failure as one line and exit 2.

    Those are: :class:`UserError`, a checkpoint that cannot be read, a bad conditioning
    entry, a broken stack, and a bad backbone argument or unreachable pretrained URL
    (:class:`mmcondattn.models.backbones.utils.BackboneConfigError`, raised while the
    runner builds or initialises the model)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from mmcondattn.compat import CheckpointError
        from mmcondattn.conditioning import ConditioningConfigError
        from mmcondattn.stack import StackError
        try:
            return main(*args, **kwargs)
        except (UserError, CheckpointError, ConditioningConfigError, StackError) as e:
            print(f'error: {e}', file=sys.stderr)
            sys.exit(2)
        except ValueError as e:
            if not _is_backbone_config_error(e):
                raise
            print(f'error: {e}', file=sys.stderr)
            sys.exit(2)

    return wrapper


def _is_backbone_config_error(e: BaseException) -> bool:
    # imported only when needed: the backbones import mmdet and mmpretrain
    try:
        from mmcondattn.models.backbones.utils import BackboneConfigError
    except ImportError:
        return False
    return isinstance(e, BackboneConfigError)
