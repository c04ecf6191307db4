"""Adapters for libraries other than OpenMMLab (imported on demand by
:func:`mmcondattn.condition_model`): :mod:`.timm`."""
