"""Memory of one forward+backward: its peak (:func:`peak_memory_mb`) and what autograd saves for the backward pass
(:func:`saved_bytes`).

Peak memory is the extra memory one run needs on top of what exists before it (inputs, parameters):

* CUDA: ``torch.cuda.max_memory_allocated() - memory_allocated()`` before the run (caching-allocator exact);
* CPU: torch has no CPU allocator statistics, so we measure the process: glibc's ``mallopt`` fixes the mmap
  threshold at 64 KiB (freed tensors go back to the OS at once instead of staying in malloc's free lists),
  ``malloc_trim`` releases free heap pages, ``/proc/self/clear_refs`` resets the resident high-water mark, and the
  peak is ``VmHWM`` after the run minus ``VmRSS`` before it. This counts every allocation made during the run
  (torch, numba scratch, autograd graph), at page granularity. Where that is unavailable (non-Linux), peak memory
  is reported as ``None``.

That allocator setting makes every allocation above 64 KiB a fresh ``mmap`` whose pages fault in on first touch,
which would slow down allocation-heavy implementations more than others: the harness therefore takes **all timings
first** and measures peak memory afterwards (:mod:`.measure`).
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ... import _memory
from .timing import sync

try:
    _LIBC: Any = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: no CPU peak-memory measurement
    _LIBC = None


def _fix_malloc_threshold() -> bool:
    """glibc: fixed 64 KiB mmap threshold so freed tensors leave the resident set immediately."""
    return _LIBC is not None and _memory.set_malloc_thresholds(64 * 1024, 64 * 1024)


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Extra peak memory (MiB) of one call of ``fn`` (see the module docstring for the method)."""
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if not _fix_malloc_threshold():
        return None
    try:
        _LIBC.malloc_trim(0)  # return free heap pages (e.g. freed before the threshold was fixed) to the OS
        base = _proc_status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        fn()
        return max(0, _proc_status_kb("VmHWM") - base) / 1024
    except OSError:
        return None


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of ``module(x)`` (the input included,
    the parameters not): deterministic, the same on every machine."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x).sum()
    params = {(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in module.parameters()}
    return sum(v for k, v in seen.items() if k not in params)
