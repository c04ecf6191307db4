"""Method 2, spectral conditioning of Q, K, V: W ← W + C on blocks of the fused qkv weight.

Corrections are fixed and non-trainable, saved in checkpoints as ``<name>.correction`` and
outside weight decay. ``identity`` corrections (lam·I) do not depend on the weights, so they
are not held in memory: forward adds lam·x, and lam·I is made on demand (the ``correction``
attribute, ``state_dict()``, folding). An ``svd`` correction is a persistent buffer. When it
correction is computed (adopted, see docs/methods.md): it follows the weights until it is
first used, then stays fixed. Concretely:

* it is computed when conditioning is attached, and again whenever the weights may have
  changed before training: by ``init_weights()`` (mmengine's init chain) and when
  ``load_state_dict`` loads weights without a correction (a stock checkpoint; the key is
  still reported missing);
* it is fixed from the weights as they stand at the first forward, ``state_dict()``,
  ``effective_weight()`` or ``folded()``, i.e. after any initialisation or pretrained
  loading, whatever path the backbone's ``init_weights`` takes, and before any training
  step;
* a checkpoint that holds ``*.correction`` restores it exactly and fixes it (a conditioned
  checkpoint reloads exactly);
* ``recompute_correction()`` / :func:`recompute_corrections` recompute it on request, e.g.
  to condition from a checkpoint's weights rather than its stored correction.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear_grad import linear_backward, needs_autograd
from .options import SPECTRAL_TARGETS, SpectralCfg, parse_conditioning

__all__ = ['spectral_correction', 'SpectralLinear', 'recompute_corrections']


def _block_correction(w: torch.Tensor, mode: str, lam: float) -> torch.Tensor:
    """Correction (out, in) for one block ``w`` (out, in), in float64."""
    if mode == 'identity':
        return lam * torch.eye(*w.shape, dtype=torch.float64, device=w.device)
    u, s, vh = torch.linalg.svd(w.to(torch.float64), full_matrices=False)  # thin SVD
    return s[0] * (u @ vh)  # σ_max · U Vᵀ: κ(W + C) = (2σ_max) / (σ_min + σ_max) <= 2


@torch.no_grad()
def spectral_correction(weight: torch.Tensor,
                        mode: str = 'identity',
                        lam: float = 10.0,
                        targets: Sequence[str] = SPECTRAL_TARGETS) -> torch.Tensor:
    """Correction C for a fused qkv ``weight`` (3·D_out, D_in); same shape and dtype.

    Per targeted D_out×D_in block (q, k, v in that order): ``identity`` → lam·I (rectangular
    identity); ``svd`` → σ_max(W_b)·U Vᵀ from the thin SVD W_b = U Σ Vᵀ (float64), so that
    κ(W_b + C_b) <= 2 over the min(D_out, D_in) singular values. Other blocks are zero.
    """
    cfg = parse_conditioning(dict(spectral=dict(mode=mode, lam=lam, targets=targets))).spectral
    if weight.dim() != 2 or weight.shape[0] % len(SPECTRAL_TARGETS):
        raise ValueError(f'expected a fused qkv weight (3*D_out, D_in), got {tuple(weight.shape)}')
    blocks = weight.detach().chunk(len(SPECTRAL_TARGETS), dim=0)  # 3 × (D_out, D_in)
    with torch.autocast(weight.device.type, enabled=False):
        corr = [_block_correction(b, cfg.mode, cfg.lam) if t in cfg.targets else
                torch.zeros_like(b, dtype=torch.float64)
                for t, b in zip(SPECTRAL_TARGETS, blocks)]
    return torch.cat(corr, dim=0).to(weight.dtype)


def _identity_corrected(x, weight, bias, lam: float, blocks: Tuple[int, ...], d: int):
    """y = x Wᵀ + b, then y_t[..., :k] += lam · x[..., :k] in place for each targeted block t
    of the 3 output blocks of D_out (k = min(D_out, D_in)); no autograd."""
    y = F.linear(x, weight, bias)  # (..., 3·D_out)
    k = min(d, x.shape[-1])
    y3 = y.unflatten(-1, (len(SPECTRAL_TARGETS), d))  # (..., 3, D_out), a view
    if len(blocks) == len(SPECTRAL_TARGETS):
        y3[..., :k].add_(x[..., None, :k], alpha=lam)
    else:
        for b in blocks:
            y3[..., b, :k].add_(x[..., :k], alpha=lam)
    return y


class _IdentityCorrectedLinear(torch.autograd.Function):
    """x (W + lam·I)ᵀ + b without a matmul (:func:`_identity_corrected`).

    The add is in place on F.linear's fresh output, and the backward is written out
    (:mod:`.linear_grad`) with x's extra gradient lam · grad_y_t added in place, so neither
    direction copies a (..., 3·D_out) tensor (autograd would clone the output's gradient for
    an in-place add on a view).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lam: float, blocks: Tuple[int, ...], d: int):
        y = _identity_corrected(x, weight, bias, lam, blocks, d)
        ctx.save_for_backward(x, weight)
        ctx.lam, ctx.blocks, ctx.d = lam, blocks, d
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
            g3 = grad_y.unflatten(-1, (len(SPECTRAL_TARGETS), ctx.d))  # a view
            for b in ctx.blocks:
                grad_x[..., :k].add_(g3[..., b, :k], alpha=ctx.lam)
        return grad_x, grad_w, grad_b, None, None, None


class SpectralLinear(nn.Linear):
    """A fused qkv ``nn.Linear`` computing x (W + C)ᵀ + b with a fixed correction C.

    ``correction`` (shaped like ``weight``, no gradient) is saved under the state-dict key
    ``<name>.correction`` (``weight`` and ``bias`` keep theirs). ``svd`` mode holds it in a
    persistent buffer; ``identity`` mode holds nothing (lam·I is made when asked for).
    Forward: ``identity`` mode adds lam·x to the targeted output blocks of F.linear(x, W, b)
    (no extra matmul); ``svd`` mode runs F.linear(x, W + C, b) (one small add per call,
    cheaper than a second matmul). :meth:`folded` gives the equivalent plain ``nn.Linear``.

    Args:
        in_features, out_features, bias: as ``nn.Linear``; ``out_features`` = 3·D_out.
        spectral (SpectralCfg | dict | None): options (default: SpectralCfg()).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 spectral: Optional[SpectralCfg] = None, **factory):
        super().__init__(in_features, out_features, bias, **factory)
        self._configure(spectral)

    @classmethod
    def from_linear(cls, linear: nn.Linear, spectral=None) -> 'SpectralLinear':
        """A SpectralLinear sharing ``linear``'s weight and bias Parameters."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new._configure(spectral)
        return new

    def _configure(self, spectral) -> None:
        if not isinstance(spectral, SpectralCfg):
            spectral = parse_conditioning(dict(spectral=spectral or {})).spectral
        if self.out_features % len(SPECTRAL_TARGETS):
            raise ValueError(f'out_features {self.out_features} is not 3·D_out (fused q, k, v)')
        self.spectral = spectral
        self.block = self.out_features // len(SPECTRAL_TARGETS)  # D_out
        if spectral.mode == 'svd':
            self.register_buffer('correction', torch.empty_like(self.weight, requires_grad=False))
        self.recompute_correction()

    def __getattr__(self, name: str):
        if name == 'correction' and self.__dict__.get('spectral') is not None \
                and self.spectral.mode == 'identity':
            return self._identity_correction()
        return super().__getattr__(name)

    def _identity_correction(self) -> torch.Tensor:
        """lam·I on the targeted blocks (3·D_out, D_in), made from the options alone."""
        s = self.spectral
        return spectral_correction(self.weight, s.mode, s.lam, s.targets)

    @property
    def fixed(self) -> bool:
        """False while an svd correction still follows the weights (see the module doc)."""
        return self._fixed

    @torch.no_grad()
    def recompute_correction(self) -> None:
        """Set ``correction`` from the current weight; an svd correction then follows the
        weights again until its next use."""
        s = self.spectral
        if s.mode == 'svd':
            self.correction.copy_(spectral_correction(self.weight, s.mode, s.lam, s.targets))
        self._fixed = s.mode == 'identity'

    def _fix(self) -> None:
        if not self._fixed:
            self.recompute_correction()
            self._fixed = True

    def init_weights(self) -> None:
        """mmengine's init chain: refresh an svd correction that is not fixed yet."""
        if not self._fixed:
            self.recompute_correction()

    def effective_weight(self) -> torch.Tensor:
        """W + C (3·D_out, D_in), with gradient to W; fixes an svd correction."""
        self._fix()
        return self.weight + self.correction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spectral
        if s.mode == 'svd':
            return F.linear(x, self.effective_weight(), self.bias)
        args = (x, self.weight, self.bias, s.lam,
                tuple(SPECTRAL_TARGETS.index(t) for t in s.targets), self.block)
        if needs_autograd(*args[:3]):
            return _IdentityCorrectedLinear.apply(*args)
        return _identity_corrected(*args)  # nothing to differentiate: no autograd.Function

    @torch.no_grad()
    def folded(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight W + C and a copy of the bias."""
        lin = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
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
            # not a buffer here: consume the key ourselves, and check it is our lam·I
            if key in unexpected_keys:
                unexpected_keys.remove(key)
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
            elif not self._matches_identity(state_dict[key]):
                s = self.spectral
                error_msgs.append(
                    f'{key}: the checkpoint holds a correction that is not lam·I for '
                    f'lam={s.lam}, targets={s.targets} (trained with another spectral '
                    f'mode/lam?); using lam·I')
            return
        if key not in state_dict:
            # a stock checkpoint: keep the key reported missing, follow the loaded weights
            if prefix + 'weight' in state_dict and not self._fixed:
                self.recompute_correction()
            return
        self._fixed = True

    def _matches_identity(self, loaded) -> bool:
        want = self._identity_correction()
        return (torch.is_tensor(loaded) and loaded.shape == want.shape
                and torch.allclose(loaded.to(want), want))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self._fix()  # a saved svd correction is the one used from then on
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.spectral.mode == 'identity':
            destination[prefix + 'correction'] = self._identity_correction()

    def extra_repr(self) -> str:
        s = self.spectral
        lam = f', lam={s.lam}' if s.mode == 'identity' else ''
        return f'{super().extra_repr()}, mode={s.mode}{lam}, targets={s.targets}'


def recompute_corrections(model: nn.Module, force: bool = False) -> int:
    """Recompute the svd corrections of the SpectralLinears in ``model`` from their current
    weights: those not fixed yet, or all with ``force`` (e.g. to condition a model loaded
    from a conditioned checkpoint on its loaded weights instead). Returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, SpectralLinear) and m.spectral.mode == 'svd' and (force or not m.fixed):
            m.recompute_correction()
            n += 1
    return n
