"""Implementations of the E4 spatial aggregation (the last step of Eq. 12) behind one interface.

Every backend computes, for ``v`` of shape ``(B, C, |A|, H, W)`` and generated kernels ``kernel`` of shape
``(B, s, k*k, |A|, H', W')`` (the k x k grid Omega flattened row-major, in the frame of each group element),

    out[b, c, a, y, x] = sum_u  kernel[b, c % s, index[a, u], a, y, x] * v_pad[b, c, a, s*y + u_row, s*x + u_col]

(plus an optional static kernel bias ``(s, k*k)`` added to every generated kernel, :func:`aggregate`),
i.e. ``f'(g) = sum_{g~ in N1(g)} K_{g^-1 g~} ⊙ V(g~)`` with ``N1(g) = {g (v, e) : v in Omega}``: the kernel of group
element ``a`` is transformed by ``a`` (``index``: the relative-position table of Omega,
:meth:`e4net.nn.aggregation.GroupAggregation.relative_index`) so that it acts at the relative position ``g^-1 g~``
(Theorem 1). Zero padding ``k // 2``; ``stride`` subsamples the output grid.

Backends (declared in :mod:`.builtin`): ``"reference"`` (unfold, the literal math, k^2-fold memory), ``"shift"``
(shift-and-accumulate in plain PyTorch, no unfold; the fallback), ``"numba"`` (fused CPU forward/backward, when numba
is installed; the CPU default) and ``"triton"`` (fused CUDA kernels, when triton is installed; the CUDA default).
Each declares what it takes (:class:`Backend`); the dispatcher (:mod:`.dispatch`) alone chooses one for ``"auto"``,
falls back to ``"shift"`` for tensors a backend does not declare, and honours :func:`use_backend`.
"""

from __future__ import annotations

from ._geometry import add_kernel_bias, output_size, transform_kernel
from .builtin import NUMBA, REFERENCE, SHIFT, TRITON
from .contract import AggregateFn, Backend, lazy_function
from .dispatch import (
    FALLBACK,
    aggregate,
    available_backends,
    check_backend,
    get_backend,
    register_backend,
    resolve_backend,
    use_backend,
)
from .generated import aggregate_generated

for _backend in (REFERENCE, SHIFT, NUMBA, TRITON):
    register_backend(_backend)
del _backend

__all__ = [
    "aggregate", "aggregate_generated", "resolve_backend", "use_backend", "available_backends", "check_backend", "get_backend",
    "register_backend", "Backend", "AggregateFn", "lazy_function", "FALLBACK", "add_kernel_bias", "transform_kernel",
    "output_size",
]  # fmt: skip
