"""mmpretrain classifier checkpoint of a conditioned backbone -> detection-backbone init.

The classification and detection forms of ``ConditionedXCiT`` / ``ConditionedViT`` /
``ConditionedSwin`` share their backbone keys; the classifier has a few more, which the
detection form does not build:

========  ==========================================================================
family    classification-only keys
========  ==========================================================================
xcit      ``cls_token``, ``ca_layers.*`` (class attention), ``norm.*`` (after it)
vit       ``cls_token`` and the class token's row of ``pos_embed``
swin      none (``norm3`` normalises the last stage in both forms)
========  ==========================================================================

:func:`drop_classification_keys` is the one place that knows this list: the offline
converter below uses it and so does the detection forms' load hook, which lets
``init_cfg=dict(type='Pretrained', checkpoint=<classifier>, prefix='backbone.')`` work
without an offline conversion. Spectral correction buffers (``*.qkv.correction``) are
kept: they belong to the backbone's attention in both forms.
"""
from typing import Dict, List, Optional

from .common import ConversionError, StateDict, split_prefix

__all__ = [
    'CLASSIFICATION_ONLY_KEYS', 'drop_classification_keys', 'guess_family', 'classifier_to_detector'
]

# per family: exact names, and prefixes ending with '.'
CLASSIFICATION_ONLY_KEYS: Dict[str, tuple] = {
    'xcit': ('cls_token', 'ca_layers.', 'norm.'),
    'vit': ('cls_token', ),
    'swin': (),
}


def drop_classification_keys(state_dict: StateDict, family: str, prefix: str = '') -> List[str]:
    """Remove (in place) the classification-only keys of ``family`` under ``prefix``.

    For ViT, when the class token is present, its row of ``pos_embed`` is cut off too
    (reported as ``'<prefix>pos_embed[:, 0]'``).

    Returns:
        the removed keys.
    """
    if family not in CLASSIFICATION_ONLY_KEYS:
        raise ValueError(f'unknown backbone family {family!r}; valid: '
                         f'{sorted(CLASSIFICATION_ONLY_KEYS)}')
    names = CLASSIFICATION_ONLY_KEYS[family]
    had_cls_token = prefix + 'cls_token' in state_dict
    dropped = []
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if any(rest == n or (n.endswith('.') and rest.startswith(n)) for n in names):
            dropped.append(key)
            del state_dict[key]
    pos = prefix + 'pos_embed'
    if family == 'vit' and had_cls_token and pos in state_dict:
        state_dict[pos] = state_dict[pos][:, 1:]
        dropped.append(pos + '[:, 0]')
    return dropped


def guess_family(backbone: StateDict) -> str:
    """'xcit', 'swin' or 'vit' from the backbone keys (without prefix)."""
    if any(k.startswith('xca_layers.') for k in backbone):
        return 'xcit'
    if any(k.startswith('stages.') for k in backbone):
        return 'swin'
    if any(k.startswith('layers.') and '.attn.qkv.' in k for k in backbone):
        return 'vit'
    raise ConversionError('cannot tell the backbone family (no xca_layers.*, stages.* or '
                          'layers.*.attn.qkv.* keys); pass it explicitly')


def classifier_to_detector(state_dict: StateDict, family: Optional[str] = None) -> StateDict:
    """The backbone keys of a classifier that the detection form builds, without prefix.

    Args:
        state_dict: an mmpretrain ``ImageClassifier`` state dict (``backbone.*``,
            ``head.*``, ...).
        family: 'xcit', 'vit' or 'swin'; guessed from the keys when None.

    Returns:
        the detection backbone's keys (``backbone.`` stripped, head and classification-only
        keys dropped): load with ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

    Raises:
        ConversionError: no ``backbone.*`` key, or the family cannot be told.
    """
    backbone, _ = split_prefix(state_dict, 'backbone.')
    if not backbone:
        raise ConversionError('no backbone.* keys: is this an mmpretrain classifier checkpoint?')
    drop_classification_keys(backbone, family or guess_family(backbone))
    return backbone
