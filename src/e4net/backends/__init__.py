"""Implementations of the E4 spatial aggregation (the last step of Eq. 12) behind one interface.

Every backend computes, for ``v`` of shape ``(B, C, |A|, H, W)`` and generated kernels ``kernel`` of shape
``(B, s, k*k, |A|, H', W')`` (the k x k grid Omega flattened row-major, in the frame of each group element),

    out[b, c, a, y, x] = sum_u  kernel[b, c % s, perm[a, u], a, y, x] * v_pad[b, c, a, s*y + u_row, s*x + u_col]

(plus an optional static kernel bias ``(s, k*k)`` added to every generated kernel, :func:`aggregate`),
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
_BIAS: set[str] = set()


def register_backend(
    name: str, fn: AggregateFn, auto_for: tuple[str, ...] = (), priority: int = 0, supports_bias: bool = False
) -> None:
    """Register an aggregation backend.

    ``auto_for`` lists the device types (``"cpu"``, ``"cuda"``) where ``backend="auto"`` may pick it; among those,
    the highest ``priority`` wins. ``supports_bias``: ``fn`` takes a fifth argument, the kernel bias (or None).
    """
    _BACKENDS[name] = fn
    if supports_bias:
        _BIAS.add(name)
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


def aggregate(
    v: torch.Tensor,
    kernel: torch.Tensor,
    perm: torch.Tensor,
    stride: int = 1,
    backend: str = "auto",
    kernel_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch the aggregation to a backend (see the module docstring for the exact formula).

    ``kernel_bias`` (``(s, k*k)``, optional) is added to every generated kernel first: ``kernel + bias`` in the
    frame of each group element, i.e. a static depthwise kernel per slice (the bias of the generator's ``W2``).
    Backends registered with ``supports_bias`` fuse it; for the others it is added here.
    """
    name = resolve_backend(backend, v.device)
    if kernel_bias is not None and name in _BIAS:
        return _BACKENDS[name](v, kernel, perm, stride, kernel_bias)  # type: ignore[call-arg]
    return _BACKENDS[name](v, add_kernel_bias(kernel, kernel_bias), perm, stride)


def add_kernel_bias(kernel: torch.Tensor, kernel_bias: torch.Tensor | None) -> torch.Tensor:
    """``kernel (B, s, k*k, |A|, H, W) + kernel_bias (s, k*k)`` broadcast over batch, group axis and pixels."""
    if kernel_bias is None:
        return kernel
    if kernel_bias.shape != kernel.shape[1:3]:
        raise ValueError(
            f"kernel_bias must have shape {tuple(kernel.shape[1:3])} (s, k*k), got {tuple(kernel_bias.shape)}"
        )
    return kernel + kernel_bias.view(1, *kernel_bias.shape, 1, 1, 1)


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

    def fn(v: torch.Tensor, kernel: torch.Tensor, perm: torch.Tensor, stride: int = 1, *bias) -> torch.Tensor:
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)(v, kernel, perm, stride, *bias)

    fn.__name__ = attr
    return fn


from . import reference as _reference  # noqa: E402
from . import shift as _shift  # noqa: E402

register_backend("reference", _reference.aggregate_reference)
register_backend("shift", _shift.aggregate_shift, auto_for=("cpu", "cuda"), priority=0)
if importlib.util.find_spec("numba") is not None:
    register_backend("numba", _lazy("numba_agg", "aggregate_numba"), auto_for=("cpu",), priority=10, supports_bias=True)
if importlib.util.find_spec("triton") is not None:
    register_backend("triton", _lazy("triton_agg", "aggregate_triton"), auto_for=("cuda",), priority=10)

__all__ = [
    "aggregate", "add_kernel_bias", "register_backend", "available_backends", "check_backend", "resolve_backend",
    "transform_kernel", "output_size",
]  # fmt: skip
