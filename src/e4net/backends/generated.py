"""The E4 aggregation with the kernel generator's last linear map in front of it (Eq. 12 and Sec. 4.1):
``aggregate(v, W2 · h + b2)`` as one call, so that a backend may generate the kernels in cache instead of storing them.

In 3-D the generated kernels hold ``s k^3`` values per voxel and group element (54 for k = 3, s = 2), several times
the fields of ``v``; storing them, reading them back and differentiating them through memory is most of the E4
layer's time. A backend that declares ``load_generated_3d`` (numba) computes each split's kernels from ``h`` in
cache, forward and backward; on pixel grids, numba's ``load_generated`` does the same in inference. Otherwise the
kernels are generated here (one batched GEMM, or the caller's ``make_kernels``) and :func:`e4net.backends.aggregate` runs as usual, so the result is the same whichever runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._geometry import check_aggregation_shapes
from .dispatch import _choose, _Inputs, _last_run, aggregate, traced_choice

__all__ = ["aggregate_generated"]


def aggregate_generated(
    v: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    stride: int = 1,
    backend: str = "auto",
    make_kernels: Callable[[], torch.Tensor] | None = None,
    fuse: bool = True,
) -> torch.Tensor:
    """``aggregate(v, kernel, index, stride, backend, kernel_bias=bias)`` with ``kernel = weight · hidden``.

    Args:
        v: values ``(B, C, |A|, *grid)``.
        hidden: the generator's hidden features on the output grid, ``(B, C_h, |A|, *out_grid)``.
        weight: ``W2``, ``(s k^d, C_h)``; row ``j k^d + u`` makes offset ``u`` of slice ``j``.
        bias: ``b2``, ``(s k^d,)``, or None.
        index, stride, backend: as :func:`e4net.backends.aggregate`.
        make_kernels: when the kernels must be stored, the caller's own way to make them (E4Conv: its ``span``
            module's GEMM); default: one batched GEMM here.
        fuse: ``False`` never fuses (E4Conv: when hooks observe its ``span`` module).

    Pixel grids: a backend that declares ``load_generated`` (numba) generates the kernels in cache when no gradient
    is wanted (inference); with gradients the kernels are stored and differentiated as usual.
    """
    b, nh, n = hidden.shape[:3]
    kk = index.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != nh or weight.shape[0] % kk:
        raise ValueError(
            f"aggregate_generated: weight must be (s * {kk}, {nh}) for hidden {tuple(hidden.shape)}, got "
            f"{tuple(weight.shape)}"
        )
    s = weight.shape[0] // kk
    kernel_shape = (b, s, kk, n, *hidden.shape[3:])
    kernel_bias = None if bias is None else bias.view(s, kk)
    if fuse:
        others = (hidden, weight) if bias is None else (hidden, weight, bias)
        if torch.compiler.is_compiling():  # the choice as a constant of the traced graph (see dispatch)
            traced = traced_choice(backend, v, others)
            needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (v, *others))
            if traced.generated is not None and (v.dim() == 6 or not needs_grad):
                check_aggregation_shapes(v, torch.empty(kernel_shape, device="meta"), index, stride, kernel_bias)
                return traced.generated(v, hidden, weight, bias, index, stride)
            return _stored(v, hidden, weight, index, stride, backend, make_kernels, kernel_shape, kernel_bias)
        inputs = _Inputs.of(v, others)
        chosen = _choose(backend, inputs)
        fused = chosen.load_generated_3d if v.dim() == 6 else (None if inputs.needs_grad else chosen.load_generated)
        if fused is not None:
            check_aggregation_shapes(v, torch.empty(kernel_shape, device="meta"), index, stride, kernel_bias)
            _last_run.set(chosen.name)
            return fused()(v, hidden, weight, bias, index, stride)
    return _stored(v, hidden, weight, index, stride, backend, make_kernels, kernel_shape, kernel_bias)


def _stored(
    v: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    index: torch.Tensor,
    stride: int,
    backend: str,
    make_kernels: Callable[[], torch.Tensor] | None,
    kernel_shape: tuple[int, ...],
    kernel_bias: torch.Tensor | None,
) -> torch.Tensor:
    """The unfused path: the kernels stored (the caller's ``make_kernels`` or one batched GEMM), then aggregated."""
    if make_kernels is not None:
        kernel = make_kernels()
    else:
        kernel = torch.matmul(weight, hidden.reshape(hidden.shape[0], hidden.shape[1], -1)).view(kernel_shape)
    return aggregate(v, kernel, index, stride, backend, kernel_bias=kernel_bias)
