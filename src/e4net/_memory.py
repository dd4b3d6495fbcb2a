"""CPU memory: the allocator setting of e4net's commands, and large buffers backed by transparent huge pages.

**Allocator.** glibc serves every allocation above its mmap threshold with fresh pages from the kernel and
returns them on ``free``; the threshold adapts to the sizes freed so far, but an allocation of exactly the size
last freed still goes to ``mmap``. A training step allocates and frees the same activation sizes over and over,
so each step pays a page fault per 4 KiB of every large activation: on the 2-core benchmark machine one E4-Net
E4 layer (batch 128) took 198-241 ms forward+backward with glibc's defaults and 150-153 ms after
:func:`tune_cpu_allocator` (a 3x3 GroupConv of the same width: 145-155 ms and 144-145 ms). That function fixes the
mmap threshold at glibc's maximum (32 MiB) and the trim threshold at 512 MiB, so freed activations stay in the
heap and are reused without faults (the process keeps its high-water mark, like PyTorch's CUDA caching
allocator). ``e4net train / eval / reproduce / bench`` call it at start-up (``E4NET_MALLOC_TUNING=0`` turns it
off); the library never changes the allocator of a program that imports it: call it yourself.

**Huge pages.**

A tensor of more than glibc's mmap threshold (32 MiB at most) gets fresh pages from the kernel on every
allocation, and the first write to each 4 KiB page is a page fault. On the 2-core benchmark machine that costs
about 24 ms per 80 MiB, the size of the generated kernels of one E4-Net layer at batch 128 (and of their gradient):
measured, a first-touch ``fill_`` of 80 MiB takes 30.7 ms, 6.3 ms with huge pages. Linux kernels configured with
``transparent_hugepage=madvise`` (a common default) only use huge pages where a program asks for them, which
:func:`empty` does with ``madvise(MADV_HUGEPAGE)`` before the buffer is touched. Elsewhere (other systems,
``never``, non-CPU devices, small buffers) it is ``torch.empty``.

To give *every* large allocation of a process huge pages (e.g. a whole training run), glibc >= 2.35 reads
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` from the environment at start-up (see docs/performance.md).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence

import torch

_MADV_HUGEPAGE = 14
_MIN_BYTES = 8 << 20  # below this the heap reuses freed memory anyway
_PAGE = 4096


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD = 512 << 20
_thresholds: tuple[int, int] | None = None  # the last (mmap, trim) thresholds set through this module


def _load_mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_mallopt = _load_mallopt()


def set_malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """glibc's mmap and trim thresholds (process-wide); True if both were set (False where not glibc)."""
    global _thresholds
    if _mallopt is None:
        return False
    ok = _mallopt(_M_MMAP_THRESHOLD, mmap_bytes) == 1 and _mallopt(_M_TRIM_THRESHOLD, trim_bytes) == 1
    _thresholds = (mmap_bytes, trim_bytes) if ok else None
    return ok


def tune_cpu_allocator() -> bool:
    """Keep freed activations in glibc's heap for reuse (see the module docstring); True if it was applied.

    Linux / glibc only (elsewhere: a no-op returning False). Process-wide: call it at the start of a CPU
    training script. Peak memory may stay at the process's high-water mark.
    """
    return set_malloc_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD)


def cpu_allocator_tuned() -> bool:
    """Whether the allocator currently has :func:`tune_cpu_allocator`'s setting."""
    return _thresholds == (MMAP_THRESHOLD, TRIM_THRESHOLD)


def advise_huge_pages(t: torch.Tensor) -> bool:
    """Ask the kernel to back ``t``'s (not yet touched) memory with huge pages; True if the call succeeded."""
    if _madvise is None or t.device.type != "cpu" or torch.compiler.is_compiling():  # traced: no pointer to advise
        return False
    nbytes = t.untyped_storage().nbytes()
    if nbytes < _MIN_BYTES:
        return False
    ptr = t.untyped_storage().data_ptr()
    start = (ptr + _PAGE - 1) & ~(_PAGE - 1)
    length = (ptr + nbytes - start) & ~(_PAGE - 1)
    return length > 0 and _madvise(start, length, _MADV_HUGEPAGE) == 0


def empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.empty``; large CPU buffers are advised as huge pages before first use."""
    t = torch.empty(tuple(shape), dtype=dtype, device=device)
    advise_huge_pages(t)
    return t


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """:func:`empty` with the shape, dtype and device of ``t`` (always contiguous)."""
    return empty(t.shape, t.dtype, t.device)
