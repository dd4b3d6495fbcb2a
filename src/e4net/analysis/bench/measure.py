"""Measuring the implementations of one case: a trial run each, interleaved forward and forward+backward medians
(:mod:`.timing`), then peak memory (:mod:`.memory`) and the ratios against the case's baseline.

The rule of the harness: every timing of a run is taken before the first peak-memory measurement, whose allocator
setting would slow allocation-heavy implementations. :func:`measure` therefore appends a :class:`MemoryJob` to the
run's list instead of measuring memory at once; the driver (:func:`e4net.analysis.bench.run_benchmarks`) runs the
jobs after all suites have been timed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .memory import peak_memory_mb
from .rows import Row
from .timing import median_times

Run = Callable[[], Any]
Ratios = Callable[[Sequence[Row]], None]


@dataclass
class MemoryJob:
    """Peak-memory measurements of one case's rows, deferred until every timing is done; then its ratios again."""

    rows: list[Row]
    fns: list[tuple[int, Run]]
    ratios: Ratios

    def run(self, device: torch.device) -> None:
        for i, fn in self.fns:
            self.rows[i].peak_mb = peak_memory_mb(fn, device)
        self.ratios(self.rows)


def layer_runs(module: nn.Module, x: torch.Tensor) -> tuple[Run, Run]:
    """A forward (autograd enabled, as in training) and a forward+backward of ``module`` on ``x``."""
    grad = None

    def fwd() -> torch.Tensor:
        return module(x)

    def fwdbwd() -> None:
        nonlocal grad
        y = module(x)
        if grad is None or grad.shape != y.shape:
            grad = torch.randn_like(y)
        y.backward(grad)
        module.zero_grad(set_to_none=True)
        x.grad = None

    return fwd, fwdbwd


def measure(
    rows: list[Row],
    fwds: Sequence[Run],
    fwdbwds: Sequence[Run],
    repeats: int,
    device: torch.device,
    memory_jobs: list[MemoryJob] | None,
    ratios: Ratios,
) -> None:
    """Fill ``fwd_ms`` and ``fwdbwd_ms`` of ``rows`` (interleaved medians), then ``peak_mb`` of one forward+backward
    each (now when ``memory_jobs`` is None, else appended to it to run later), and ``ratios(rows)``. An
    implementation that fails its trial run (e.g. out of memory) gets a ``note`` and does not stop the others."""
    ok = list(range(len(rows)))
    for i in list(ok):
        try:
            fwdbwds[i]()
        except (RuntimeError, MemoryError) as exc:
            rows[i].note = f"failed: {str(exc).splitlines()[0][:80]}"
            ok.remove(i)
    for i, t in zip(ok, median_times([fwds[i] for i in ok], repeats, device)):
        rows[i].fwd_ms = 1e3 * t
    for i, t in zip(ok, median_times([fwdbwds[i] for i in ok], repeats, device, warmup=0)):
        rows[i].fwdbwd_ms = 1e3 * t
    job = MemoryJob(rows, [(i, fwdbwds[i]) for i in ok], ratios)
    if memory_jobs is None:
        job.run(device)
    else:
        ratios(rows)
        memory_jobs.append(job)
