"""Conditioned XCiT: mmpretrain's ``XCiT`` with conditioning and arch presets.

Two forms, one name (``ConditionedXCiT``):

- classification, in mmpretrain's ``MODELS``: the stock backbone (class attention, class
  token, final norm, ``out_type`` for the stock heads);
- detection, in mmdet's ``MODELS``: the official XCiT detection backbone
  (facebookresearch/xcit ``detection/backbone/xcit.py``): no class attention; the maps
  after XCA blocks ``out_indices`` go through a :class:`SimplePyramid` (``fpn1``..``fpn4``)
  to strides 4, 8, 16, 32.

Both keep the stock state-dict keys (spectral conditioning adds ``*.qkv.correction``).
"""
import inspect
from collections import OrderedDict
from typing import Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS as DET_MODELS
from mmengine.logging import print_log
from mmpretrain.models.backbones import XCiT
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from mmcondattn.conditioning.model import BackboneAdapter, register_backbone
from mmcondattn.converters.common import ConversionError, add_prefix
from mmcondattn.converters.xcit import convert_xcit_backbone, is_source_xcit_backbone
from .pyramid import SimplePyramid
from .utils import (BackboneConfigError, DropInBackbone, attach_conditioning, check_kwargs,
                    local_pretrained, pad_to_multiple, pop_fixed,
                    register_classification_key_filter, resolve_arch)
from .validate import check_backbone_args

__all__ = ['ConditionedXCiT', 'ConditionedXCiTDet']

# mmpretrain's configs/xcit/xcit-{nano,tiny,small,medium,large}-{12,24}-p{16,8}_*.py
# (= the official models); ``patch_size`` is a separate argument (16 or 8).
XCIT_ARCHS = {
    'n12':
    dict(embed_dims=128, depth=12, num_heads=4, layer_scale_init_value=1.0, tokens_norm=False),
    't12':
    dict(embed_dims=192, depth=12, num_heads=4, layer_scale_init_value=1.0, tokens_norm=True),
    't24':
    dict(embed_dims=192, depth=24, num_heads=4, layer_scale_init_value=1e-5, tokens_norm=True),
    's12':
    dict(embed_dims=384, depth=12, num_heads=8, layer_scale_init_value=1.0, tokens_norm=True),
    's24':
    dict(embed_dims=384, depth=24, num_heads=8, layer_scale_init_value=1e-5, tokens_norm=True),
    'm24':
    dict(embed_dims=512, depth=24, num_heads=8, layer_scale_init_value=1e-5, tokens_norm=True),
    'l24':
    dict(embed_dims=768, depth=24, num_heads=16, layer_scale_init_value=1e-5, tokens_norm=True),
}
XCIT_REQUIRED = ('embed_dims', 'depth', 'num_heads')
# the stock XCiT's own spelling of what a preset sets
XCIT_ARCH_KEYS = XCIT_REQUIRED + ('layer_scale_init_value', 'tokens_norm')
# the official detection configs (detection/configs/xcit/mask_rcnn_xcit_*_3x_coco.py)
XCIT_DET_OUT_INDICES = {12: (3, 5, 7, 11), 24: (7, 11, 15, 23)}


def _stock_default(cls: type, name: str):
    return inspect.signature(cls.__init__).parameters[name].default


@PRETRAIN_MODELS.register_module()
class ConditionedXCiT(DropInBackbone, XCiT):
    """XCiT classifier backbone with conditioning (mmpretrain ``MODELS``).

    Args:
        arch (str | dict, optional): 'n12', 't12', 't24', 's12', 's24', 'm24' or 'l24'
            (embed dims, depth, heads, layer-scale init and ``tokens_norm`` of mmpretrain's /
            the official configs), or a dict with ``embed_dims``, ``depth``, ``num_heads``
            and optionally ``layer_scale_init_value``, ``tokens_norm``: a shorthand for
            the stock ``XCiT``'s own arguments of those names, which may be given instead
            (as in mmpretrain's configs) or as well (then they must agree). Defaults to
            None: the stock arguments and their defaults.
        conditioning (dict, optional): e.g. ``dict(precond=dict(), spectral=dict(lam=2.))``,
            see :func:`mmcondattn.conditioning.parse_conditioning`. Defaults to None (off).
            Attention: the XCA layers; tokens: the patch tokens before the class token is
            appended. The class-attention layers stay stock.
        **kwargs: every argument of mmpretrain's ``XCiT`` (``patch_size``, ``out_type``,
            ``out_indices``, ``drop_path_rate``, ``bn_norm_cfg``, ``init_cfg``, ...).
    """
    arch_zoo = XCIT_ARCHS

    def __init__(self, arch=None, conditioning: Optional[dict] = None, **kwargs):
        check_backbone_args(self, arch=arch, **kwargs)
        owner = type(self).__name__
        settings = resolve_arch(owner, arch, self.arch_zoo, kwargs, XCIT_ARCH_KEYS, XCIT_REQUIRED)
        check_kwargs(owner, XCiT, kwargs)
        super().__init__(**settings, **kwargs)
        attach_conditioning(self, conditioning)


@DET_MODELS.register_module(name='ConditionedXCiT')
class ConditionedXCiTDet(DropInBackbone, XCiT):
    """XCiT detection backbone with conditioning (mmdet ``MODELS``, name ``ConditionedXCiT``).

    The official XCiT detection backbone on top of mmpretrain's XCiT blocks: patch
    embedding, Fourier position encoding, XCA blocks, and a :class:`SimplePyramid` on the
    maps after blocks ``out_indices``. No class token, class attention or final norm
    (a classifier checkpoint's keys for them are ignored on load, with a log line).

    Args:
        arch (str | dict, optional): as :class:`ConditionedXCiT` (or the stock arguments
            ``embed_dims``, ``depth``, ``num_heads``, ...). Defaults to None.
        patch_size (int): 16 or 8. Defaults to 16.
        out_indices (Sequence[int], optional): the 4 XCA blocks whose outputs feed the
            stride 4, 8, 16, 32 levels (negative ones count from the end). Defaults to the
            official (3, 5, 7, 11) for depth 12 and (7, 11, 15, 23) for depth 24 (other
            depths must give them).
        pyramid_norm_cfg (dict): norm inside ``pyramid.fpn1`` (patch 16). Defaults to
            ``dict(type='BN')``; distributed configs use ``dict(type='SyncBN')`` here and
            in ``bn_norm_cfg`` (patch embedding and LPI), like the official code.
        frozen_stages (int): -1 (default) freezes nothing; k >= 0 freezes the patch and
            position embeddings and the first k XCA blocks (mmdet's convention).
        conditioning (dict, optional): as :class:`ConditionedXCiT`. Defaults to None.
        **kwargs: other arguments of mmpretrain's ``XCiT`` (``drop_path_rate``,
            ``bn_norm_cfg``, ``init_cfg``, ...). ``cls_attn_layers``, ``out_type`` and
            ``final_norm`` may be given, with the only values this form supports: 0,
            'featmap' and False.

    Shapes:
        (B, 3, H, W) -> 4 maps (B, C, H'/s, W'/s), s = 4, 8, 16, 32, C = embed dims, where
        H', W' are H, W rounded up to multiples of 32 (the input is zero-padded at the
        bottom / right, as mmdet's data preprocessor does with ``pad_size_divisor=32``).
    """
    arch_zoo = XCIT_ARCHS

    def __init__(self,
                 arch=None,
                 patch_size: int = 16,
                 out_indices: Optional[Sequence[int]] = None,
                 pyramid_norm_cfg: dict = dict(type='BN'),
                 frozen_stages: int = -1,
                 conditioning: Optional[dict] = None,
                 **kwargs):
        check_backbone_args(
            self,
            arch=arch,
            patch_size=patch_size,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            **kwargs)
        owner = type(self).__name__
        settings = resolve_arch(owner, arch, self.arch_zoo, kwargs, XCIT_ARCH_KEYS, XCIT_REQUIRED)
        depth = settings.get('depth', _stock_default(XCiT, 'depth'))
        if out_indices is None:
            if depth not in XCIT_DET_OUT_INDICES:
                raise BackboneConfigError(
                    f'{owner}: give out_indices (4 block indices) for depth {depth}; defaults '
                    f'exist for depths {list(XCIT_DET_OUT_INDICES)}')
            out_indices = XCIT_DET_OUT_INDICES[depth]
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if len(out_indices) != 4 or not all(-depth <= i < depth for i in out_indices):
            raise BackboneConfigError(f'{owner}: out_indices must be 4 block indices in '
                                      f'[0, {depth}), got {tuple(out_indices)}')
        out_indices = [i % depth for i in out_indices]
        if not -1 <= frozen_stages <= depth:
            raise BackboneConfigError(f'{owner}: frozen_stages must be in [-1, {depth}], '
                                      f'got {frozen_stages}')
        fixed = pop_fixed(owner, kwargs,
                          dict(cls_attn_layers=0, out_type='featmap', final_norm=False))
        check_kwargs(owner, XCiT, kwargs)
        super().__init__(
            patch_size=patch_size,
            **settings,
            **fixed,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            **kwargs)
        del self.cls_token  # built by the stock class, unused without class attention
        self.pyramid = SimplePyramid(self.embed_dims, patch_size, pyramid_norm_cfg)
        register_classification_key_filter(self, 'xcit')
        handle = self._register_load_state_dict_pre_hook(self._convert_source_layout)
        self._load_state_dict_pre_hooks.move_to_end(handle.id, last=False)  # before the filter
        attach_conditioning(self, conditioning)

    def _convert_source_layout(self, state_dict, prefix, *args, **kwargs):
        """Load-state-dict pre-hook: backbone keys in the official facebookresearch/xcit
        (an official COCO Mask R-CNN checkpoint) or timm layout are converted in place
        (:func:`~mmcondattn.converters.xcit.convert_xcit_backbone`), with a log line, so
        ``tools/test.py CONFIG OFFICIAL.pth`` loads them like a checkpoint of ours."""
        keys = [k for k in state_dict if k.startswith(prefix)]
        if not is_source_xcit_backbone(k[len(prefix):] for k in keys):
            return
        source = OrderedDict((k[len(prefix):], state_dict.pop(k)) for k in keys)
        try:
            state_dict.update(add_prefix(convert_xcit_backbone(source), prefix))
        except ConversionError as e:
            raise BackboneConfigError(f'{type(self).__name__}: cannot load the checkpoint: '
                                      f'{e}') from None
        print_log(
            f'{type(self).__name__}: converted {len(keys)} backbone keys from the '
            f'official / timm XCiT layout',
            logger='current')

    def init_weights(self):
        # the stock XCiT.init_weights also initialises the class token, absent here
        with local_pretrained(self):
            BaseBackbone.init_weights(self)

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        stem = [self.patch_embed, self.pos_drop]
        if self.use_pos_embed:
            stem.append(self.pos_embed)
        for m in stem + list(self.xca_layers[:self.frozen_stages]):
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = pad_to_multiple(x, SimplePyramid.strides[-1])  # (B, 3, H, W), H, W % 32 == 0
        B = x.shape[0]
        x, (Hp, Wp) = self.patch_embed(x)  # (B, N, C), N = Hp·Wp
        if self.use_pos_embed:
            x = x + self.pos_embed(B, Hp, Wp).flatten(2).transpose(1, 2)  # (B, N, C)
        x = self.pos_drop(x)
        feats = []
        for i, layer in enumerate(self.xca_layers):
            x = layer(x, Hp, Wp)
            if i in self.out_indices:
                feats.append(x.transpose(1, 2).reshape(B, -1, Hp, Wp))  # (B, C, Hp, Wp)
        return self.pyramid(feats)


register_backbone(XCiT, BackboneAdapter(pos_drop='pos_drop'))
