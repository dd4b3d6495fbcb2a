"""One rule for the CPU threads of e4net's numba kernels: they follow torch's (``torch.set_num_threads``).

numba's OpenMP threading layer and torch share the OpenMP runtime's thread count: starting numba's thread pool, and
each parallel numba kernel launched with numba's default (all cores), reset ``torch.get_num_threads()`` to that
default (measured: ``torch.set_num_threads(1)``, then any numba kernel, and torch ran on 2 threads again). So every launch of a parallel
numba kernel in e4net first calls :func:`follow_torch`, which sets numba's count to torch's (capped by
``NUMBA_NUM_THREADS``): a user's ``torch.set_num_threads(1)`` (or ``e4net bench --threads 1``) then holds for the
whole model, numba's kernels included.
"""

from __future__ import annotations

import torch


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
