"""Method 2, spectral conditioning of Q, K, V: W ← W + C on blocks of the fused qkv weight.

C is non-trainable, saved as ``<name>.correction`` and outside weight decay. ``identity``
(lam·I) does not depend on the weights and is not held in memory. An ``svd`` correction (a
buffer) is computed from the weights when conditioning is attached, again by
``init_weights()`` (mmengine's init chain) and when a checkpoint without it is loaded; a
checkpoint with it restores it exactly. With ``update='once'`` (default) a forward never
recomputes it; with ``update='every_step'`` every training forward (train mode, gradients
on) recomputes it from the current weights first (docs/methods.md).

``layout='block'`` (default) puts C on each D_out×D_in block of q, k, v (head h gets lam·x
of its own channel slice); ``layout='per_head'`` on each head's d×D_in rows of a block (every
head gets lam·x[..., :d]; svd: σ_max(W_h)·U_h V_hᵀ per head).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear_grad import linear_backward, needs_autograd
from .options import SPECTRAL_TARGETS, SpectralCfg, parse_conditioning

__all__ = ['spectral_correction', 'SpectralLinear', 'recompute_corrections']


def _block_correction(w: torch.Tensor, mode: str, lam: float, heads: int = 1) -> torch.Tensor:
    """Correction (out, in) for one block ``w`` (out, in), in float64: one per group of
    out / ``heads`` rows (heads = 1: the whole block)."""
    d = w.shape[0] // heads  # rows per group
    if mode == 'identity':  # rows h·d + i get lam at column i (i < min(d, in))
        eye = torch.eye(d, w.shape[1], dtype=torch.float64, device=w.device)
        return lam * (eye if heads == 1 else eye.repeat(heads, 1))
    if heads == 1:
        u, s, vh = torch.linalg.svd(w.to(torch.float64), full_matrices=False)  # thin SVD
        return s[0] * (u @ vh)  # σ_max · U Vᵀ: κ(W + C) = (2σ_max) / (σ_min + σ_max) <= 2
    u, s, vh = torch.linalg.svd(w.to(torch.float64).unflatten(0, (heads, d)), full_matrices=False)
    return (s[:, :1, None] * (u @ vh)).flatten(0, 1)  # per head: σ_max(W_h) · U_h V_hᵀ


def _groups(cfg: SpectralCfg, num_heads: Optional[int]) -> int:
    """Row groups per block that get their own correction: num_heads for 'per_head', else 1."""
    if cfg.layout != 'per_head':
        return 1
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError("spectral layout='per_head' needs num_heads (an integer >= 1: the "
                         f'heads in each of q, k, v), got {num_heads!r}')
    return num_heads


def _correction(weight: torch.Tensor, cfg: SpectralCfg, heads: int) -> torch.Tensor:
    """:func:`spectral_correction` for parsed options and ``heads`` row groups per block."""
    blocks = weight.detach().chunk(len(SPECTRAL_TARGETS), dim=0)  # 3 × (D_out, D_in)
    with torch.autocast(weight.device.type, enabled=False):
        corr = [
            _block_correction(b, cfg.mode, cfg.lam, heads)
            if t in cfg.targets else torch.zeros_like(b, dtype=torch.float64)
            for t, b in zip(SPECTRAL_TARGETS, blocks)
        ]
    return torch.cat(corr, dim=0).to(weight.dtype)


@torch.no_grad()
def spectral_correction(weight: torch.Tensor,
                        mode: str = 'identity',
                        lam: float = 10.0,
                        targets: Sequence[str] = SPECTRAL_TARGETS,
                        layout: str = 'block',
                        update: str = 'once',
                        num_heads: Optional[int] = None) -> torch.Tensor:
    """Correction C for a fused qkv ``weight`` (3·D_out, D_in); same shape and dtype.

    ``layout='block'``: per targeted D_out×D_in block (q, k, v in that order), ``identity`` →
    lam·I (rectangular identity); ``svd`` → σ_max(W_b)·U Vᵀ from the thin SVD W_b = U Σ Vᵀ
    (float64), so that κ(W_b + C_b) <= 2 over the min(D_out, D_in) singular values.
    ``layout='per_head'`` (needs ``num_heads``; d = D_out / num_heads): the same per head's
    d×D_in rows W_h of each targeted block: lam·I_{d×D_in} (row h·d + i gets lam at column i),
    or σ_max(W_h)·U_h V_hᵀ (κ(W_h + C_h) <= 2). Other blocks are zero. ``update`` does not
    change C (accepted so that a config's options can be passed as they are).
    """
    cfg = parse_conditioning(
        dict(spectral=dict(mode=mode, lam=lam, targets=targets, layout=layout,
                           update=update))).spectral
    if weight.dim() != 2 or weight.shape[0] % len(SPECTRAL_TARGETS):
        raise ValueError(f'expected a fused qkv weight (3*D_out, D_in), got {tuple(weight.shape)}')
    heads = _groups(cfg, num_heads)
    if weight.shape[0] // len(SPECTRAL_TARGETS) % heads:
        raise ValueError(f'D_out {weight.shape[0] // len(SPECTRAL_TARGETS)} is not a multiple '
                         f'of num_heads {heads}')
    return _correction(weight, cfg, heads)


def _identity_corrected(x, weight, bias, lam: float, blocks: Tuple[int, ...], heads: int, d: int):
    """y = x Wᵀ + b, then y_{t,h}[..., :k] += lam · x[..., :k] in place for each targeted
    block t of the 3 output blocks and each of its ``heads`` groups of d rows (k = min(d, D_in);
    heads = 1, d = D_out: the block layout); no autograd."""
    y = F.linear(x, weight, bias)  # (..., 3·heads·d)
    k = min(d, x.shape[-1])
    y4 = y.unflatten(-1, (len(SPECTRAL_TARGETS), heads, d))  # (..., 3, heads, d), a view
    if len(blocks) == len(SPECTRAL_TARGETS):
        y4[..., :k].add_(x[..., None, None, :k], alpha=lam)
    else:
        for b in blocks:
            y4[..., b, :, :k].add_(x[..., None, :k], alpha=lam)
    return y


class _IdentityCorrectedLinear(torch.autograd.Function):
    """x (W + lam·I)ᵀ + b without a matmul (:func:`_identity_corrected`).

    The add is in place on F.linear's fresh output, and the backward is written out
    (:mod:`.linear_grad`) with x's extra gradient lam · grad_y_t (summed over the heads with
    ``per_head``: one reduction) added in place, so neither
    direction copies a (..., 3·D_out) tensor (autograd would clone the output's gradient for
    an in-place add on a view).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lam: float, blocks: Tuple[int, ...], heads: int, d: int):
        y = _identity_corrected(x, weight, bias, lam, blocks, heads, d)
        ctx.save_for_backward(x, weight)
        ctx.lam, ctx.blocks, ctx.heads, ctx.d = lam, blocks, heads, d
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_x, grad_w, grad_b = linear_backward(grad_y, x, weight, x.dtype,
                                                 ctx.needs_input_grad[:3], ctx.bias_dtype)
        if grad_x is not None:
            k = min(ctx.d, x.shape[-1])
            g4 = grad_y.unflatten(-1, (len(SPECTRAL_TARGETS), ctx.heads, ctx.d))  # a view
            gx = grad_x[..., :k]
            if ctx.heads == 1:  # the block layout
                for b in ctx.blocks:
                    gx.add_(g4[..., b, 0, :k], alpha=ctx.lam)
            elif len(ctx.blocks) == len(SPECTRAL_TARGETS):  # (..., k): summed over q, k, v, heads
                gx.add_(g4[..., :k].sum((-3, -2), dtype=gx.dtype), alpha=ctx.lam)
            else:
                for b in ctx.blocks:
                    gx.add_(g4[..., b, :, :k].sum(-2, dtype=gx.dtype), alpha=ctx.lam)
        return grad_x, grad_w, grad_b, None, None, None, None


class SpectralLinear(nn.Linear):
    """A fused qkv ``nn.Linear`` computing x (W + C)ᵀ + b with a correction C (no gradient).

    ``correction`` (shaped like ``weight``, no gradient) is saved under the state-dict key
    ``<name>.correction`` (``weight`` and ``bias`` keep theirs). ``svd`` mode holds it in a
    persistent buffer; in ``identity`` mode it is a read-only property (lam·I, made when
    asked for; a loaded one is ignored). Forward: ``identity`` mode adds lam·x to
    the targeted output blocks (``per_head``: lam·x[..., :d] to every head's d outputs) of
    F.linear(x, W, b) (no extra matmul); ``svd`` mode runs F.linear(x, W + C, b), with
    ``update='every_step'`` after recomputing C from W when in train mode with gradients on.
    :meth:`folded` gives the equivalent plain ``nn.Linear``.

    Args:
        in_features, out_features, bias: as ``nn.Linear``; ``out_features`` = 3·D_out.
        spectral (SpectralCfg | dict | None): options (default: SpectralCfg()).
        device, dtype: as ``nn.Linear``.
        num_heads (int | None): heads in each of q, k, v (D_out = num_heads·d); needed by
            ``layout='per_head'`` (an error without it), unused by ``'block'``.

    Attributes:
        strength (float): α in [0, 1], default 1; the weight is W + α·C (a warm start,
            :mod:`.state`; α = 0 is the stock Linear). Folding keeps it.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 spectral: Optional[SpectralCfg] = None,
                 device=None,
                 dtype=None,
                 num_heads: Optional[int] = None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if not isinstance(spectral, SpectralCfg):
            spectral = parse_conditioning(dict(spectral=spectral or {})).spectral
        if out_features % len(SPECTRAL_TARGETS):
            raise ValueError(f'out_features {out_features} is not 3·D_out (fused q, k, v)')
        self.spectral = spectral
        self.num_heads = num_heads
        self.block = out_features // len(SPECTRAL_TARGETS)  # D_out
        self.groups = _groups(spectral, num_heads)  # row groups per block with their own C
        if self.block % self.groups:
            raise ValueError(f'D_out {self.block} (out_features / 3) is not a multiple of '
                             f'num_heads {num_heads}')
        self.strength = 1.0
        if spectral.mode == 'svd':
            self.register_buffer('correction', torch.empty_like(self.weight))
            if not self.weight.is_meta:
                self.recompute_correction()

    @classmethod
    def from_linear(cls,
                    linear: nn.Linear,
                    spectral=None,
                    num_heads: Optional[int] = None) -> 'SpectralLinear':
        """A SpectralLinear sharing ``linear``'s weight and bias Parameters (its correction
        computed from them); ``num_heads`` as in the constructor."""
        new = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            spectral,
            device='meta',
            dtype=linear.weight.dtype,
            num_heads=num_heads)
        new.weight, new.bias = linear.weight, linear.bias
        if new.spectral.mode == 'svd':
            new.correction = torch.empty_like(linear.weight, requires_grad=False)
            new.recompute_correction()
        return new

    @property
    def correction(self) -> torch.Tensor:
        """C (3·D_out, D_in): the svd buffer, or lam·I on the targeted blocks (per head with
        ``layout='per_head'``)."""
        if self.spectral.mode == 'svd':
            try:
                return self._buffers['correction']
            except KeyError:  # not registered yet (during __init__)
                raise AttributeError('correction') from None
        return _correction(self.weight, self.spectral, self.groups)

    @torch.no_grad()
    def recompute_correction(self) -> None:
        """Set an svd ``correction`` from the current weight (identity: nothing to do)."""
        if self.spectral.mode == 'svd':
            self.correction.copy_(_correction(self.weight, self.spectral, self.groups))

    def init_weights(self) -> None:
        """mmengine's init chain (after the weights were initialised): recompute an svd
        correction."""
        self.recompute_correction()

    def effective_weight(self) -> torch.Tensor:
        """W + α·C (3·D_out, D_in), α = ``strength`` (1: W + C), with gradient to W."""
        if self.strength == 1:
            return self.weight + self.correction
        return self.weight + self.strength * self.correction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spectral
        if s.update == 'every_step' and self.training and torch.is_grad_enabled():
            self.recompute_correction()  # from the weights the last optimiser step left
        if self.strength == 0:  # a warm start's first step: the stock Linear
            return F.linear(x, self.weight, self.bias)
        if s.mode == 'svd':
            return F.linear(x, self.effective_weight(), self.bias)
        blocks = tuple(SPECTRAL_TARGETS.index(t) for t in s.targets)
        args = (x, self.weight, self.bias, s.lam * self.strength, blocks, self.groups,
                self.block // self.groups)
        if needs_autograd(*args[:3]):
            return _IdentityCorrectedLinear.apply(*args)
        return _identity_corrected(*args)  # nothing to differentiate: no autograd.Function

    @torch.no_grad()
    def folded(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight W + α·C (the stored C: with
        ``update='every_step'``, the one the last training forward computed) and a copy of
        the bias."""
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype)
        lin.weight.copy_(self.effective_weight())
        lin.weight.requires_grad_(self.weight.requires_grad)
        if self.bias is not None:
            lin.bias.copy_(self.bias)
            lin.bias.requires_grad_(self.bias.requires_grad)
        return lin

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        key = prefix + 'correction'
        if self.spectral.mode == 'identity':
            # not a buffer here: consume the key (a checkpoint trained with another λ or mode
            # is reported, with its effect, by the model's conditioning record: .state)
            if key in unexpected_keys:
                unexpected_keys.remove(key)
            if key not in state_dict and strict:
                missing_keys.append(key)
        elif key not in state_dict and prefix + 'weight' in state_dict:
            # a stock checkpoint: the key stays reported missing; follow the loaded weights
            self.recompute_correction()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.spectral.mode == 'identity':
            destination[prefix + 'correction'] = self.correction

    def extra_repr(self) -> str:
        s = self.spectral
        lam = f', lam={s.lam}' if s.mode == 'identity' else ''
        layout = '' if s.layout == 'block' else f', layout={s.layout}, num_heads={self.num_heads}'
        update = '' if s.update == 'once' else f', update={s.update}'
        strength = '' if self.strength == 1 else f', strength={self.strength:g}'
        return (f'{super().extra_repr()}, mode={s.mode}{lam}, targets={s.targets}{layout}'
                f'{update}{strength}')


def recompute_corrections(model: nn.Module) -> int:
    """Recompute every svd correction in ``model`` from its current weights (after an
    initialisation outside mmengine's init chain, to condition a model loaded from a
    conditioned checkpoint on its loaded weights instead, or with ``update='every_step'`` to
    evaluate or fold with C of the final weights). Returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, SpectralLinear) and m.spectral.mode == 'svd':
            m.recompute_correction()
            n += 1
    return n
