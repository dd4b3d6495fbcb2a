"""Input validation shared by the layers: one clear ValueError naming the problem."""

from __future__ import annotations

import torch

from ..groups import Group


def check_kernel_size(kernel_size: int, layer: str) -> int:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"{layer}: kernel_size must be a positive odd int (the kernel needs a centre pixel for the "
            f"rotation to be exact), got {kernel_size!r}"
        )
    return kernel_size


def check_stride(stride: int, layer: str) -> int:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{layer}: stride must be a positive int, got {stride!r}")
    return stride


def check_positive(value: int, what: str, layer: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {what} must be a positive int, got {value!r}")
    return value


def check_image(x: torch.Tensor, channels: int, layer: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{layer}: expected an image batch (B, C, H, W) of rank 4, got {shape}")
    if x.shape[1] != channels:
        raise ValueError(f"{layer}: expected {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})")


def check_feature_map(x: torch.Tensor, channels: int | None, group: Group, layer: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{layer}: expected a group feature map (B, C, |G|, H, W) of rank 5 for {group.name}, got {shape}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{layer}: expected {channels} fields, got {x.shape[1]} (input shape {tuple(x.shape)})")
    if x.shape[2] != group.order:
        raise ValueError(
            f"{layer}: group axis has size {x.shape[2]} but {group.name} has {group.order} elements "
            f"(input shape {tuple(x.shape)})"
        )


def check_exact_stride(x: torch.Tensor, stride: int, layer: str) -> None:
    """A stride-s sampling grid {0, s, 2s, ...} is symmetric under the point group only on odd-sized maps."""
    if stride > 1 and (x.shape[-2] % 2 == 0 or x.shape[-1] % 2 == 0):
        raise ValueError(
            f"{layer}: stride {stride} on a {x.shape[-2]}x{x.shape[-1]} map is not exactly equivariant: the sampling "
            f"grid of a strided layer is symmetric under 90-degree rotations only when height and width are odd. "
            f"Use stride 1 followed by SpatialMaxPool2d / SpatialAvgPool2d, or feed an odd-sized map."
        )
