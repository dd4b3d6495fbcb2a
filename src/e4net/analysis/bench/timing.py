"""Wall-clock timing of a benchmark: warm-up, then steady-state runs, interleaved across implementations; medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(fns: list[Callable[[], Any]], repeats: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Median seconds of each function, timed **interleaved** (round-robin over ``fns`` in every repeat).

    On a shared, noisy machine the load changes over time; interleaving exposes every implementation to the
    same conditions, so the ratios between them stay meaningful. Each timed call is preceded by one untimed call
    of the same function, so it runs in the steady state a training loop sees (the allocator's free lists and
    the caches hold what this implementation left, not what the previous one did); timing right after another
    implementation measured up to 20% more for the fast E4 layer.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            fn()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]
