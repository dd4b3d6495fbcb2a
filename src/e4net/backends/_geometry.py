"""Geometry shared by the aggregation backends (the last step of Eq. 12): output grid, kernel side, the transform of
each group element's kernel by that element, and the static kernel bias.

Private to :mod:`e4net.backends`: the implementations import these from here, the package face re-exports the
public ones (``output_size``, ``transform_kernel``, ``add_kernel_bias``).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "add_kernel_bias", "check_aggregation_shapes", "check_kernel_bias", "kernel_side",
    "output_size", "transform_kernel",
]  # fmt: skip


def output_size(size: int, kernel_size: int, stride: int) -> int:
    """Spatial output size with padding ``k // 2``: ``(size - 1) // stride + 1``."""
    return (size + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def kernel_side(kk: int, spatial_dims: int = 2) -> int:
    """The side ``k`` of the grid Omega from its size ``k^d`` (the kernels' axis 2 is Omega flattened; d = 2 for
    k x k pixel kernels, 3 for k x k x k voxel kernels)."""
    k = math.isqrt(kk) if spatial_dims == 2 else round(kk ** (1.0 / spatial_dims))
    if k**spatial_dims != kk or k < 1:
        grid = " x ".join(["k"] * spatial_dims)
        raise ValueError(f"the kernel axis must hold a {grid} grid, got {kk} entries")
    return k


def transform_kernel(kernel: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``kernel (B, s, k*k, |A|, H, W)`` -> the kernel of slot ``a`` transformed by ``a``:
    ``out[:, :, u, a] = kernel[:, :, index[a, u], a]`` (``index``: the relative-position table, Theorem 1).
    Voxel kernels ``(B, s, k^3, |A|, D, H, W)`` alike."""
    n, kk = index.shape
    idx = index.t().reshape(1, 1, kk, n, *([1] * (kernel.dim() - 4))).expand(kernel.shape)
    return torch.gather(kernel, 2, idx)


def check_aggregation_shapes(
    v: torch.Tensor,
    kernel: torch.Tensor,
    index: torch.Tensor,
    stride: int,
    kernel_bias: torch.Tensor | None = None,
) -> None:
    """The shapes every backend computes on: ``v (B, C, |A|, H, W)``, ``kernel (B, s, k*k, |A|, H', W')`` with
    ``C % s == 0`` and ``(H', W')`` the output grid at ``stride``, ``index (|A|, k*k)``, ``kernel_bias (s, k*k)``;
    on voxel grids ``v (B, C, |A|, D, H, W)``, ``kernel (B, s, k^3, |A|, D', H', W')``, ``index (|A|, k^3)``."""
    if v.dim() not in (5, 6) or kernel.dim() != v.dim() + 1 or index.dim() != 2:
        raise ValueError(
            f"aggregation: expected v (B, C, |A|, H, W), kernel (B, s, k*k, |A|, H', W') and index (|A|, k*k) (or "
            f"v (B, C, |A|, D, H, W), kernel (B, s, k^3, |A|, D', H', W'), index (|A|, k^3)), got "
            f"{tuple(v.shape)}, {tuple(kernel.shape)}, {tuple(index.shape)}"
        )
    b, c, n = v.shape[:3]
    s, kk = kernel.shape[1], kernel.shape[2]
    k = kernel_side(kk, v.dim() - 3)
    if stride < 1:
        raise ValueError(f"aggregation: stride must be >= 1, got {stride}")
    expected = (b, s, kk, n, *(output_size(size, k, stride) for size in v.shape[3:]))
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
    """``kernel (B, s, k*k, |A|, H, W) + kernel_bias (s, k*k)`` broadcast over batch, group axis and pixels (voxels)."""
    if kernel_bias is None:
        return kernel
    check_kernel_bias(kernel, kernel_bias)
    return kernel + kernel_bias.view(1, *kernel_bias.shape, *([1] * (kernel.dim() - 3)))
