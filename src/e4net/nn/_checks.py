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


PADDINGS = ("same", "valid")


def check_padding(padding: str, kernel_size: int, layer: str) -> tuple[str, int]:
    """``padding`` in ``PADDINGS`` and a kernel size that is exact with it: odd for ``"same"``, any for ``"valid"``
    (why: the module docstring of :mod:`e4net.nn.conv`)."""
    if padding not in PADDINGS:
        raise ValueError(f"{layer}: padding must be 'same' or 'valid', got {padding!r}")
    if padding == "same":
        return padding, check_kernel_size(kernel_size, layer)
    return padding, check_positive(kernel_size, "kernel_size", layer)


def check_fits(x: torch.Tensor, kernel_size: int, layer: str) -> None:
    """An unpadded (``"valid"``) layer needs a map at least as large as its kernel."""
    if x.shape[-2] < kernel_size or x.shape[-1] < kernel_size:
        raise ValueError(
            f"{layer}: a {x.shape[-2]}x{x.shape[-1]} map is smaller than the {kernel_size}x{kernel_size} kernel of a "
            f"'valid' (unpadded) convolution"
        )


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
        raise ValueError(
            f"{layer}: expected {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})"
        )


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


def check_exact_stride(x: torch.Tensor, stride: int, layer: str, crop: int = 0) -> None:
    """A stride-s sampling grid {0, s, 2s, ...} is symmetric under the point group only on odd-sized maps.

    ``crop``: how much smaller than the input the grid of kernel centres is (``k - 1`` without padding, else 0).
    """
    h, w = x.shape[-2] - crop, x.shape[-1] - crop
    if stride > 1 and (h % 2 == 0 or w % 2 == 0):
        where = f"{x.shape[-2]}x{x.shape[-1]} map" + (f" ({h}x{w} kernel centres without padding)" if crop else "")
        raise ValueError(
            f"{layer}: stride {stride} on a {where} is not exactly equivariant: the sampling "
            f"grid of a strided layer is symmetric under 90-degree rotations only when height and width are odd. "
            f"Use stride 1 followed by SpatialMaxPool2d / SpatialAvgPool2d, or feed an odd-sized map."
        )


def check_input(x: torch.Tensor, channels: int, group: Group, lifting: bool, layer: str) -> None:
    """An image batch for a lifting layer (input on the plane), else a group feature map of ``group``."""
    if lifting:
        check_image(x, channels, layer)
    else:
        check_feature_map(x, channels, group, layer)
