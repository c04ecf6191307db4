"""Conditioning of a model's attention layers on a probe batch (docs/methods.md).

The measurement needs torch alone and lives in :mod:`mmcondattn.measure` (so that κ can be
measured on a timm-only install); this module re-exports it for the OpenMMLab side
(:class:`~mmcondattn.engine.ConditionMonitorHook`, the analysis tools) and existing imports.
"""
from ..measure import HEAD_KEYS, LAYER_KEYS, measure_conditioning, per_layer, summarize

__all__ = ['LAYER_KEYS', 'HEAD_KEYS', 'measure_conditioning', 'summarize', 'per_layer']
