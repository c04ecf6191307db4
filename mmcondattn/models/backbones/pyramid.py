"""Simple feature pyramid: strides 4 / 8 / 16 / 32 from a plain (single-stride) backbone.

The layout is the one of the official XCiT detection backbone
(facebookresearch/xcit ``detection/backbone/xcit.py``, modules ``fpn1`` .. ``fpn4``), which is
also ViTDet's simple pyramid without its output convolutions (the FPN neck does those):

==========  =======================================  ======================
level       patch 16 (map at stride 16)              patch 8 (map at stride 8)
==========  =======================================  ======================
fpn1 (s4)   ConvT 2x2/2, norm, GELU, ConvT 2x2/2      ConvT 2x2/2
fpn2 (s8)   ConvT 2x2/2                              identity
fpn3 (s16)  identity                                 max-pool 2x2/2
fpn4 (s32)  max-pool 2x2/2                           max-pool 4x4/4
==========  =======================================  ======================

Parameter names inside each level equal the official ones (``fpn1.0.weight``,
``fpn1.1.running_mean``, ``fpn1.3.weight``, ``fpn2.0.weight``), so official checkpoints map
one-to-one.
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from .utils import BackboneConfigError

__all__ = ['SimplePyramid']


def _up(channels: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)


class SimplePyramid(nn.Module):
    """Four maps at strides 4, 8, 16, 32 from maps at stride ``patch_size``.

    Args:
        channels (int): channels of the input maps (kept at every level).
        patch_size (int): stride of the input maps, 16 or 8.
        norm_cfg (dict): norm between the two deconvolutions of the stride-4 level (patch
            16 only). It acts on (B, C, H, W), so use a channel norm: ``dict(type='BN')``
            (default), ``dict(type='SyncBN')`` for distributed runs, or GN.

    Shapes:
        input: a sequence of 1 map (used by every level) or 4 maps (one per level, finest
        first), each (B, C, H, W) with H, W even (patch 16) or multiples of 4 (patch 8);
        output: tuple of 4 maps (B, C, 4H, 4W), (B, C, 2H, 2W), (B, C, H, W),
        (B, C, H/2, W/2) for patch 16 (for patch 8: 2H, H, H/2, H/4).
    """

    strides = (4, 8, 16, 32)

    def __init__(self, channels: int, patch_size: int, norm_cfg: dict = dict(type='BN')):
        super().__init__()
        if patch_size == 16:
            self.fpn1 = nn.Sequential(
                _up(channels),
                build_norm_layer(norm_cfg, channels)[1], nn.GELU(), _up(channels))
            self.fpn2 = nn.Sequential(_up(channels))
            self.fpn3 = nn.Identity()
            self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)
        elif patch_size == 8:
            self.fpn1 = nn.Sequential(_up(channels))
            self.fpn2 = nn.Identity()
            self.fpn3 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))
            self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=4, stride=4))
        else:
            raise BackboneConfigError(
                f'SimplePyramid: patch_size must be 16 or 8, got {patch_size}')
        self.patch_size = patch_size

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(feats) == 1:
            feats = list(feats) * 4
        if len(feats) != 4:
            raise ValueError(f'SimplePyramid takes 1 or 4 maps, got {len(feats)}')
        ops = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return tuple(op(f) for op, f in zip(ops, feats))
