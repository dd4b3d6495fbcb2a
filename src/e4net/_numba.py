"""What e4net's numba kernels share, in one place: numba as an optional import, the rule for their CPU threads, and
the two memory layouts of a feature map they read in place.

* **Optional import.** Without numba, :data:`NUMBA` is False and ``njit`` / ``prange`` are stand-ins that leave the
  functions plain Python (never called: the layers check :data:`NUMBA` and run torch's ops).
* **Threads follow torch's** (``torch.set_num_threads``). numba's OpenMP threading layer and torch share the OpenMP
  runtime's thread count: starting numba's thread pool, and each parallel numba kernel launched with numba's default
  (all cores), reset ``torch.get_num_threads()`` to that default (measured: ``torch.set_num_threads(1)``, then any
  numba kernel, and torch ran on 2 threads again). So every launch of a parallel numba kernel in e4net first calls
  :func:`follow_torch`: a user's ``torch.set_num_threads(1)`` (or ``e4net bench --threads 1``) then holds for the
  whole model, numba's kernels included.
* **Layouts** (:func:`storage_order`): a contiguous map, or a group map ``(B, C, |A|, *grid)`` stored as ``(C, |A|,
  B, *grid)`` -- the layout in which E4's two 1x1 maps come out of one GEMM over the batch
  (:func:`e4net.nn._gemm.shared_input_pair`).
"""

from __future__ import annotations

import torch

try:
    from numba import njit, prange
except ImportError:  # numba is optional at run time: without it the layers run torch's ops
    NUMBA = False
    prange = range

    def njit(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - the functions stay plain Python, never called
        return lambda f: f
else:
    NUMBA = True

__all__ = ["NUMBA", "njit", "prange", "follow_torch", "storage_order", "empty_stored"]


def follow_torch() -> int:
    """Set numba's thread count to torch's (capped by ``NUMBA_NUM_THREADS``) in this thread; returns it."""
    import numba

    wanted = torch.get_num_threads()
    current = numba.get_num_threads()  # the first call starts numba's pool, which resets the OpenMP count: restore it
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    n = max(1, min(wanted, numba.config.NUMBA_NUM_THREADS))
    if current != n:
        numba.set_num_threads(n)
    return n


def storage_order(x: torch.Tensor) -> tuple[int, ...] | None:
    """The order of ``x``'s dims in memory when the kernels can read it in place: ``(0, 1, 2, ...)`` when contiguous,
    ``(1, 2, 0, 3, ...)`` for a group map stored as ``(C, |A|, B, *grid)``; ``None`` otherwise (copy it first).
    ``x.permute(order)`` is then contiguous."""
    if x.is_contiguous():
        return tuple(range(x.dim()))
    order = (1, 2, 0, *range(3, x.dim()))
    if x.dim() >= 4 and x.permute(order).is_contiguous():
        return order
    return None


def empty_stored(shape: torch.Size, order: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """An uninitialised CPU tensor of ``shape`` stored in ``order`` (:func:`storage_order`), and its flat buffer."""
    flat = torch.empty(shape.numel(), dtype=dtype)
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return flat.view([shape[i] for i in order]).permute(inverse), flat
