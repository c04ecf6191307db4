"""The named method presets of the benchmark and the study: one table.

Each preset is a ``model.backbone.conditioning`` and whether the spectral corrections are
folded into the weights after loading them (:func:`mmcondattn.conditioning.fold_conditioning`;
an inference-time form, not a training one). Default options everywhere (docs/methods.md).
"""
import copy
from typing import List, NamedTuple, Sequence

__all__ = ['Preset', 'PRESETS', 'check_choices', 'preset']


class Preset(NamedTuple):
    conditioning: dict
    fold: bool = False


PRESETS = {
    'baseline': Preset(dict()),
    'precond': Preset(dict(precond=dict())),
    'spectral': Preset(dict(spectral=dict())),
    'spectral_folded': Preset(dict(spectral=dict()), fold=True),
    # the paper's other readings (docs/methods.md, 'Which reading is which')
    'spectral_per_head': Preset(dict(spectral=dict(layout='per_head'))),
    'spectral_svd_every_step': Preset(dict(spectral=dict(mode='svd', update='every_step'))),
    'tokens': Preset(dict(tokens=dict())),
    'all': Preset(dict(precond=dict(), spectral=dict(), tokens=dict())),
}


def check_choices(what: str, values: Sequence[str], valid: Sequence[str]) -> List[str]:
    """``values`` as a list; one ValueError naming the bad ones and listing ``valid``."""
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f'unknown {what} {", ".join(map(repr, bad))}; valid: '
                         f'{", ".join(valid)}')
    return list(values)


def preset(name: str) -> Preset:
    """A copy of the preset ``name`` (its conditioning may be changed freely)."""
    check_choices('method', [name], list(PRESETS))
    p = PRESETS[name]
    return Preset(copy.deepcopy(p.conditioning), p.fold)
