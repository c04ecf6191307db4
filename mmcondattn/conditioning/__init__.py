"""The three conditioning methods and their measurements, in plain PyTorch (no mm* imports).

* :mod:`.precond`: preconditioned attention (row equilibration of head outputs);
* :mod:`.spectral`: spectral corrections of the fused qkv weight, :mod:`.fold` to fold them;
* :mod:`.tokens`: conditioned embedded tokens;
* :mod:`.numbers`: condition numbers, smallest singular values, attention entropy;
* :mod:`.options`: the validated config of all three;
* :mod:`.model`: :func:`condition_model` and its adapter table (which classes are supported).
"""
from .fold import fold_conditioning
from .model import (ATTENTION_ADAPTERS, BACKBONE_ADAPTERS, AttentionAdapter, BackboneAdapter,
                    PatchTokenConditioning, attach_token_conditioning, condition_attention,
                    condition_attention_layer, condition_model, rank_deficient_embedding,
                    register_attention, register_backbone)
from .numbers import attention_entropy, condition_number, min_singular_value, singular_values
from .options import (ConditioningConfig, ConditioningConfigError, PrecondCfg, SpectralCfg,
                      TokensCfg, parse_conditioning)
from .precond import PreconditionedLinear, precondition, row_scale
from .spectral import SpectralLinear, recompute_corrections, spectral_correction
from .tokens import TokenConditioner, condition_tokens, token_correction

__all__ = [
    'condition_model', 'fold_conditioning', 'condition_attention', 'condition_attention_layer',
    'attach_token_conditioning', 'PatchTokenConditioning', 'AttentionAdapter', 'BackboneAdapter',
    'ATTENTION_ADAPTERS', 'BACKBONE_ADAPTERS', 'register_attention', 'register_backbone',
    'rank_deficient_embedding', 'attention_entropy', 'condition_number', 'min_singular_value',
    'singular_values', 'ConditioningConfig', 'ConditioningConfigError', 'PrecondCfg', 'SpectralCfg',
    'TokensCfg', 'parse_conditioning', 'PreconditionedLinear', 'precondition', 'row_scale',
    'SpectralLinear', 'recompute_corrections', 'spectral_correction', 'TokenConditioner',
    'condition_tokens', 'token_correction'
]
