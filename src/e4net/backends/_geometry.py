"""Geometry shared by the aggregation backends (the last step of Eq. 12): output grid, kernel side, the transform of
each group element's kernel by that element, and the static kernel bias.

Private to :mod:`e4net.backends`: the implementations import these from here, the package face re-exports the
public ones (``output_size``, ``transform_kernel``, ``add_kernel_bias``).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "add_kernel_bias", "check_aggregation_shapes", "check_generator_shapes", "check_kernel_bias", "kernel_side",
    "output_size", "transform_kernel",
]  # fmt: skip


def output_size(size: int, kernel_size: int, stride: int) -> int:
    """Spatial output size with padding ``k // 2``: ``(size - 1) // stride + 1``."""
    return (size + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def kernel_side(kk: int) -> int:
    """The side ``k`` of the k x k grid Omega from its size ``k*k`` (the kernels' axis 2 is Omega flattened)."""
    k = math.isqrt(kk)
    if k * k != kk or k < 1:
        raise ValueError(f"the kernel axis must hold a k x k grid, got {kk} entries")
    return k


def transform_kernel(kernel: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``kernel (B, s, k*k, |A|, H, W)`` -> the kernel of slot ``a`` transformed by ``a``:
    ``out[:, :, u, a] = kernel[:, :, index[a, u], a]`` (``index``: the relative-position table, Theorem 1)."""
    n, kk = index.shape
    idx = index.t().reshape(1, 1, kk, n, 1, 1).expand(kernel.shape)
    return torch.gather(kernel, 2, idx)


def check_aggregation_shapes(
    v: torch.Tensor,
    kernel: torch.Tensor,
    index: torch.Tensor,
    stride: int,
    kernel_bias: torch.Tensor | None = None,
) -> None:
    """The shapes every backend computes on: ``v (B, C, |A|, H, W)``, ``kernel (B, s, k*k, |A|, H', W')`` with
    ``C % s == 0`` and ``(H', W')`` the output grid at ``stride``, ``index (|A|, k*k)``, ``kernel_bias (s, k*k)``."""
    if v.dim() != 5 or kernel.dim() != 6 or index.dim() != 2:
        raise ValueError(
            f"aggregation: expected v (B, C, |A|, H, W), kernel (B, s, k*k, |A|, H', W') and index (|A|, k*k), got "
            f"{tuple(v.shape)}, {tuple(kernel.shape)}, {tuple(index.shape)}"
        )
    b, c, n, h, w = v.shape
    s, kk = kernel.shape[1], kernel.shape[2]
    k = kernel_side(kk)
    if stride < 1:
        raise ValueError(f"aggregation: stride must be >= 1, got {stride}")
    expected = (b, s, kk, n, output_size(h, k, stride), output_size(w, k, stride))
    if tuple(kernel.shape) != expected or c % s or tuple(index.shape) != (n, kk):
        raise ValueError(
            f"aggregation: v {tuple(v.shape)} at stride {stride} needs kernel {expected} with C % s == 0 and index "
            f"{(n, kk)}, got kernel {tuple(kernel.shape)} and index {tuple(index.shape)}"
        )
    check_kernel_bias(kernel, kernel_bias)


def check_kernel_bias(kernel: torch.Tensor, kernel_bias: torch.Tensor | None) -> None:
    """A kernel bias, when given, is one static ``(s, k*k)`` kernel per slice (the bias of the generator's ``W2``)."""
    if kernel_bias is not None and kernel_bias.shape != kernel.shape[1:3]:
        raise ValueError(
            f"kernel_bias must have shape {tuple(kernel.shape[1:3])} (s, k*k), got {tuple(kernel_bias.shape)}"
        )


def add_kernel_bias(kernel: torch.Tensor, kernel_bias: torch.Tensor | None) -> torch.Tensor:
    """``kernel (B, s, k*k, |A|, H, W) + kernel_bias (s, k*k)`` broadcast over batch, group axis and pixels."""
    if kernel_bias is None:
        return kernel
    check_kernel_bias(kernel, kernel_bias)
    return kernel + kernel_bias.view(1, *kernel_bias.shape, 1, 1, 1)


def check_generator_shapes(
    v: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    index: torch.Tensor,
    stride: int,
    kernel_bias: torch.Tensor | None = None,
) -> tuple[int, ...]:
    """The shapes of :func:`~e4net.backends.aggregate_generated`: ``hidden (B, Ch, |A|, H', W')`` on the output
    grid and ``weight (s*k*k, Ch)`` give the kernels ``(B, s, k*k, |A|, H', W')`` of :func:`check_aggregation_shapes`
    (``k*k`` from ``index``); returns that kernel shape."""
    if hidden.dim() != 5 or weight.dim() != 2 or index.dim() != 2 or v.dim() != 5:
        raise ValueError(
            f"aggregation: expected v (B, C, |A|, H, W), hidden (B, Ch, |A|, H', W'), weight (s*k*k, Ch) and index "
            f"(|A|, k*k), got {tuple(v.shape)}, {tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(index.shape)}"
        )
    kk = index.shape[1]
    b, _, n, ho, wo = hidden.shape
    if weight.shape[1] != hidden.shape[1] or weight.shape[0] % kk:
        raise ValueError(
            f"aggregation: weight {tuple(weight.shape)} must be (s*{kk}, Ch) with Ch = {hidden.shape[1]} (hidden)"
        )
    shape = (b, weight.shape[0] // kk, kk, n, ho, wo)
    check_aggregation_shapes(v, torch.empty(shape, device="meta"), index, stride, kernel_bias)
    return shape
