"""``ConditionMonitorHook``: condition numbers of the attention layers while a model trains.

Add it to any mmdet or mmpretrain config (registered in mmengine's root ``HOOKS``, which
every scoped registry falls back to)::

    custom_hooks = [dict(type='ConditionMonitorHook', interval=50)]
"""
import time
from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmcondattn.conditioning.state import ConditioningState
from mmcondattn.models.attention import attention_layers
from mmcondattn.models.probe import measure_conditioning, per_layer, summarize

__all__ = ['ConditionMonitorHook']

_DTYPES = {'float64': torch.float64, 'float32': torch.float32}


def warm_start_strength(model) -> Optional[float]:
    """α of the first warm-started conditioning in ``model`` (None: no warm start)."""
    state = next((m for m in model.modules()
                  if isinstance(m, ConditioningState) and m.cfg.warm_start is not None), None)
    return None if state is None else state.strength()


@HOOKS.register_module()
class ConditionMonitorHook(Hook):
    """Log κ of the attention layers on a fixed probe batch every ``interval`` iterations.

    Probe: the first ``num_images`` images of the first training batch the run sees (after a
    resume, the first batch after it), preprocessed once by the model's data preprocessor
    (``training=False``) and kept, so every measurement sees the same images.

    Measurement (:func:`mmcondattn.models.probe.measure_conditioning`): before the training
    step of iterations 0, ``interval``, 2·``interval``, ... and once more after the last
    iteration, the backbone runs the probe in eval mode under ``no_grad`` with autocast off
    (an fp32 forward under AMP; SVDs in ``dtype``), its RNG state restored after and every
    module's ``training`` flag restored: training is the same with and without the hook
    (same losses for the same seed). Forward hooks exist only during a measurement; other
    iterations cost nothing.

    Logged, with ``step`` = optimizer steps done (iteration 0 = the initial weights):

    - ``cond/<key>_mean`` and ``cond/<key>_max`` (``cond/<key>_min`` for the σ_min keys)
      over layers for every key of :data:`mmcondattn.models.probe.LAYER_KEYS`, plus
      ``cond/kappa_tokens`` and ``cond/sigma_min_tokens`` (embedded patch tokens): to the
      message hub (``runner.message_hub.get_scalar('cond/kappa_attn_mean').current()``) and
      the visualizer's backends (``vis_data/scalars.json``, TensorBoard, ...);
    - with ``per_layer``, a second record ``cond_layers/<key>/<layer index>`` to the
      visualizer;
    - ``cond/strength``: the warm start's α (the next training step's), for a model with
      ``warm_start`` in its conditioning;
    - one summary line in the text log.

    Distributed runs: measured and logged on rank 0 only, on the unwrapped model (the probe
    forward has no collective operation: BatchNorm runs in eval mode); other ranks go on.

    Args:
        interval (int): iterations between measurements. Defaults to 50.
        num_images (int): probe images taken from the first batch. Defaults to 2.
        per_layer (bool): also log the per-layer values. Defaults to True.
        dtype (str): SVD precision, 'float64' or 'float32'. Defaults to 'float64'.
    """
    priority = 'LOW'

    def __init__(self,
                 interval: int = 50,
                 num_images: int = 2,
                 per_layer: bool = True,
                 dtype: str = 'float64'):
        for name, val in (('interval', interval), ('num_images', num_images)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f'ConditionMonitorHook: {name} must be an int >= 1, got {val!r}')
        if dtype not in _DTYPES:
            raise ValueError(f'ConditionMonitorHook: dtype must be one of {sorted(_DTYPES)}, '
                             f'got {dtype!r}')
        self.interval = interval
        self.num_images = num_images
        self.per_layer = per_layer
        self.dtype = _DTYPES[dtype]
        self._probe: Optional[torch.Tensor] = None  # (num_images, 3, H, W)
        self._last_step: Optional[int] = None

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        model = self._model(runner)
        if not attention_layers(getattr(model, 'backbone', model)):
            raise ValueError(
                f'ConditionMonitorHook: {type(getattr(model, "backbone", model)).__name__} has '
                'no attention layer to measure (ViT MultiheadAttention, Swin WindowMSA or '
                'XCiT XCA); remove the hook from custom_hooks for this model')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not is_main_process():
            return
        if self._probe is None:
            self._probe = self._make_probe(self._model(runner), data_batch)
        if runner.iter % self.interval == 0:
            self._measure(runner)

    def after_train(self, runner) -> None:
        if is_main_process() and self._probe is not None and self._last_step != runner.iter:
            self._measure(runner)  # the final weights

    def _make_probe(self, model, data_batch) -> torch.Tensor:
        """The first ``num_images`` inputs of ``data_batch``, preprocessed (no augments)."""
        inputs = data_batch['inputs'][:self.num_images]  # list of (3, H, W) or (B, 3, H, W)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return model.data_preprocessor(dict(inputs=inputs), False)['inputs'].detach().clone()

    def _measure(self, runner) -> None:
        start = time.perf_counter()
        result = measure_conditioning(self._model(runner), self._probe, dtype=self.dtype)
        summary = {f'cond/{k}': v for k, v in summarize(result).items()}
        alpha = warm_start_strength(self._model(runner))
        if alpha is not None:
            summary['cond/strength'] = alpha
        step = runner.iter
        for key, val in summary.items():
            runner.message_hub.update_scalar(key, val)
        runner.visualizer.add_scalars(summary, step=step)
        if self.per_layer:
            runner.visualizer.add_scalars(
                {
                    f'cond_layers/{k}': v
                    for k, v in per_layer(result).items()
                }, step=step)
        self._last_step = step
        s = summary
        tokens = f', κ(tokens) {s["cond/kappa_tokens"]:.3g}' if 'cond/kappa_tokens' in s else ''
        tokens += f', warm start α {alpha:.3g}' if alpha is not None else ''
        runner.logger.info(
            f'conditioning at step {step} (layer mean / max): '
            f'κ(A) {s["cond/kappa_attn_mean"]:.3g} / {s["cond/kappa_attn_max"]:.3g}, '
            f'κ(O) {s["cond/kappa_out_mean"]:.3g} / {s["cond/kappa_out_max"]:.3g}, '
            f'κ(X) {s["cond/kappa_x_mean"]:.3g} / {s["cond/kappa_x_max"]:.3g}, '
            f'κ(W_Q,K,V) {s["cond/kappa_wq_mean"]:.3g}, {s["cond/kappa_wk_mean"]:.3g}, '
            f'{s["cond/kappa_wv_mean"]:.3g}{tokens}, entropy {s["cond/entropy_attn_mean"]:.3g} '
            f'({time.perf_counter() - start:.2f} s)')
