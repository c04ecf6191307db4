"""Timing twin models against each other, and their peak memory.

Models are timed in alternation (the order flips every round); a ratio pairs the two calls of
one round, measured back to back, so a slow drift of the machine cancels. Peak memory of a
step = bytes of the model's parameters and buffers + the largest growth of allocated bytes
during the step. CUDA: the caching allocator's ``max_memory_allocated``. CPU: every allocation
and free of torch's CPU allocator as ``torch.profiler`` records them (``profile_memory=True``),
summed in time order (an allocator peak, like CUDA's; RSS would also see the allocator's
caching and the Python heap).
"""
import gc
import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['Timing', 'time_alternating', 'peak_memory']


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of each model's calls, ``samples[model][round]``, timed in alternation.

    Ratios pair the calls of one round (model i against ``ref``, measured back to back), so
    a slow drift of the machine cancels; their quartiles say how far one ratio is to trust.
    """
    samples: List[List[float]]

    def median(self, i: int) -> float:
        return statistics.median(self.samples[i])

    def ratios(self, i: int = 1, ref: int = 0) -> List[float]:
        return [t / r for t, r in zip(self.samples[i], self.samples[ref])]

    def ratio(self, i: int = 1, ref: int = 0) -> float:
        """Median over rounds of time(i) / time(ref)."""
        return statistics.median(self.ratios(i, ref))

    def ratio_iqr(self, i: int = 1, ref: int = 0) -> Tuple[float, float]:
        """First and third quartile of the paired ratios (both the ratio for one round)."""
        r = self.ratios(i, ref)
        if len(r) < 2:
            return r[0], r[0]
        q1, _, q3 = statistics.quantiles(r, n=4, method='inclusive')
        return q1, q3

    def pair(self, i: int, ref: int = 0) -> 'Timing':
        """The timing of ``ref`` and ``i`` alone (their rounds kept paired)."""
        return Timing([self.samples[ref], self.samples[i]])


def time_alternating(models: Sequence[nn.Module], step: Callable[[nn.Module], None], warmup: int,
                     repeats: int, device: torch.device) -> Timing:
    """Seconds of ``step(model)`` per model and round: ``warmup`` untimed calls each, then
    ``repeats`` rounds calling every model once, in reversed order every other round."""
    for m in models:
        for _ in range(warmup):
            step(m)
    times = [[] for _ in models]
    for r in range(repeats):
        order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
        for i in order:
            _sync(device)
            t0 = time.perf_counter()
            step(models[i])
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return Timing(times)


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size()
               for t in itertools.chain(model.parameters(), model.buffers()))


def _event_span_ns(event):
    """(start, end) of a profiler event in ns (torch < 2.2 events only have ``*_us``)."""
    if hasattr(event, 'start_ns'):
        return event.start_ns(), event.end_ns()
    return event.start_us() * 1000, (event.start_us() + event.duration_us()) * 1000


def _cpu_allocation_growth(prof, names: Sequence[str]) -> List[int]:
    """Largest growth of bytes held by torch's CPU allocator inside each profiled range."""
    events = list(prof.profiler.kineto_results.events())
    mem = sorted(
        (
            (_event_span_ns(e)[0], e.nbytes()) for e in events  # allocations before frees
            if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU),
        key=lambda tn: (tn[0], -tn[1]))
    growth = []
    for name in names:
        start, end = _event_span_ns(next(e for e in events if e.name() == name))
        held = peak = 0
        for t, nbytes in mem:
            if start <= t <= end:
                held += nbytes
                peak = max(peak, held)
        growth.append(peak)
    return growth


def peak_memory(models: Sequence[nn.Module], step: Callable[[nn.Module], None],
                device: torch.device) -> List[int]:
    """Bytes per model: its parameters and buffers + the peak growth of allocated memory
    during one ``step(model)`` (gradients are freed first, so they count as growth). On CPU
    all models run in one profiler session (starting one costs seconds)."""
    names = [f'peak_memory_{i}' for i in range(len(models))]
    growth = []
    if device.type == 'cuda':
        for m in models:
            m.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step(m)
            torch.cuda.synchronize(device)
            growth.append(torch.cuda.max_memory_allocated(device) - base)
            m.zero_grad(set_to_none=True)
    else:
        from torch.profiler import ProfilerActivity, profile, record_function
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for m, name in zip(models, names):
                m.zero_grad(set_to_none=True)
                gc.collect()
                with record_function(name):
                    step(m)
                m.zero_grad(set_to_none=True)
        growth = _cpu_allocation_growth(prof, names)
    return [_state_bytes(m) + g for m, g in zip(models, growth)]
