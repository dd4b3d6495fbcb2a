"""Implementations of the E4 spatial aggregation (the last step of Eq. 12) behind one interface.

Every backend computes, for ``v`` of shape ``(B, C, |A|, H, W)`` and generated kernels ``kernel`` of shape
``(B, s, k*k, |A|, H', W')`` (the k x k grid Omega flattened row-major, in the frame of each group element),

    out[b, c, a, y, x] = sum_u  kernel[b, c % s, perm[a, u], a, y, x] * v_pad[b, c, a, s*y + u_row, s*x + u_col]

i.e. ``f'(g) = sum_{g~ in N1(g)} K_{g^-1 g~} ⊙ V(g~)`` with ``N1(g) = {g (v, e) : v in Omega}``: the kernel of group
element ``a`` is transformed by ``a`` (``perm = group.kernel_permutation(k)``) so that it acts at the relative
position ``g^-1 g~`` (Theorem 1). Zero padding ``k // 2``; ``stride`` subsamples the output grid.

Backends: ``"reference"`` (unfold, the literal math, k^2-fold memory), ``"shift"`` (shift-and-accumulate in plain
PyTorch, no unfold), ``"numba"`` (fused CPU forward/backward, when numba is installed; the CPU default) and
``"triton"`` (fused CUDA kernels, when triton is installed; the CUDA default). ``"auto"`` picks the fastest
available one for the tensor's device; without numba / triton it falls back to ``"shift"``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

import torch

AggregateFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]

_BACKENDS: dict[str, AggregateFn] = {}
_AUTO: dict[str, dict[str, int]] = {}


def register_backend(name: str, fn: AggregateFn, auto_for: tuple[str, ...] = (), priority: int = 0) -> None:
    """Register an aggregation backend.

    ``auto_for`` lists the device types (``"cpu"``, ``"cuda"``) where ``backend="auto"`` may pick it; among those,
    the highest ``priority`` wins.
    """
    _BACKENDS[name] = fn
    for dev in auto_for:
        _AUTO.setdefault(dev, {})[name] = priority


def available_backends() -> list[str]:
    return ["auto", *_BACKENDS]


def check_backend(name: str) -> str:
    if name != "auto" and name not in _BACKENDS:
        raise ValueError(f"unknown aggregation backend {name!r}; available: {', '.join(available_backends())}")
    return name


def resolve_backend(name: str, device: torch.device) -> str:
    check_backend(name)
    if name != "auto":
        return name
    candidates = _AUTO.get(device.type, {})
    return max(candidates, key=candidates.__getitem__) if candidates else "shift"


def aggregate(v: torch.Tensor, kernel: torch.Tensor, perm: torch.Tensor, stride: int = 1, backend: str = "auto") -> torch.Tensor:
    """Dispatch the aggregation to a backend (see the module docstring for the exact formula)."""
    return _BACKENDS[resolve_backend(backend, v.device)](v, kernel, perm, stride)


def output_size(size: int, kernel_size: int, stride: int) -> int:
    """Spatial output size with padding ``k // 2``: ``(size - 1) // stride + 1``."""
    return (size + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def transform_kernel(kernel: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``kernel (B, s, k*k, |A|, H, W) -> `` kernel of slot ``a`` transformed by ``a``: ``out[:, :, u, a] = kernel[:, :, perm[a, u], a]``."""
    kk, n = perm.shape[1], perm.shape[0]
    idx = perm.t().reshape(1, 1, kk, n, 1, 1).expand(kernel.shape)
    return torch.gather(kernel, 2, idx)


def _lazy(module: str, attr: str) -> AggregateFn:
    """A backend function that imports its (heavy: numba / triton) module on first call."""

    def fn(v: torch.Tensor, kernel: torch.Tensor, perm: torch.Tensor, stride: int = 1) -> torch.Tensor:
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)(v, kernel, perm, stride)

    fn.__name__ = attr
    return fn


from . import reference as _reference  # noqa: E402
from . import shift as _shift  # noqa: E402

register_backend("reference", _reference.aggregate_reference)
register_backend("shift", _shift.aggregate_shift, auto_for=("cpu", "cuda"), priority=0)
if importlib.util.find_spec("numba") is not None:
    register_backend("numba", _lazy("numba_agg", "aggregate_numba"), auto_for=("cpu",), priority=10)
if importlib.util.find_spec("triton") is not None:
    register_backend("triton", _lazy("triton_agg", "aggregate_triton"), auto_for=("cuda",), priority=10)

__all__ = ["aggregate", "register_backend", "available_backends", "check_backend", "resolve_backend", "transform_kernel", "output_size"]
