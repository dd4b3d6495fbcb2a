"""Input validation shared by the layers: one clear ValueError naming the problem."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from ..groups import Group


def observed(*modules: nn.Module) -> bool:
    """Whether forward hooks (a module's own or global ones) would see one of ``modules`` run: a layer runs such a
    module through its ``__call__`` instead of fusing it away (e.g. for the hooks of :func:`e4net.count`)."""
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks for m in modules
    )


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


def _grid(x: torch.Tensor, spatial_dims: int) -> tuple[int, ...]:
    return tuple(x.shape[-spatial_dims:])


def check_fits(x: torch.Tensor, kernel_size: int, layer: str, spatial_dims: int = 2) -> None:
    """An unpadded (``"valid"``) layer needs a map at least as large as its kernel (on the last ``spatial_dims``)."""
    grid = _grid(x, spatial_dims)
    if any(n < kernel_size for n in grid):
        raise ValueError(
            f"{layer}: a {'x'.join(map(str, grid))} map is smaller than the {'x'.join([str(kernel_size)] * spatial_dims)}"
            f" kernel of a 'valid' (unpadded) convolution"
        )


def check_stride(stride: int, layer: str) -> int:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{layer}: stride must be a positive int, got {stride!r}")
    return stride


def check_positive(value: int, what: str, layer: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {what} must be a positive int, got {value!r}")
    return value


def check_image(x: torch.Tensor, channels: int, layer: str, spatial_dims: int = 2) -> None:
    """An image batch ``(B, C, H, W)`` (``spatial_dims=2``) or a voxel batch ``(B, C, D, H, W)`` (3)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 + spatial_dims:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        what = "an image batch (B, C, H, W)" if spatial_dims == 2 else "a voxel batch (B, C, D, H, W)"
        raise ValueError(f"{layer}: expected {what} of rank {2 + spatial_dims}, got {shape}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{layer}: expected {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})"
        )


def check_feature_map(x: torch.Tensor, channels: int | None, group: Group, layer: str) -> None:
    rank = 3 + group.spatial_dims
    if not isinstance(x, torch.Tensor) or x.dim() != rank:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        layout = "(B, C, |G|, H, W)" if group.spatial_dims == 2 else "(B, C, |G|, D, H, W)"
        raise ValueError(f"{layer}: expected a group feature map {layout} of rank {rank} for {group.name}, got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{layer}: expected {channels} fields, got {x.shape[1]} (input shape {tuple(x.shape)})")
    if x.shape[2] != group.order:
        raise ValueError(
            f"{layer}: group axis has size {x.shape[2]} but {group.name} has {group.order} elements "
            f"(input shape {tuple(x.shape)})"
        )


def check_exact_stride(x: torch.Tensor, stride: int, layer: str, crop: int = 0, spatial_dims: int = 2) -> None:
    """A stride-s sampling grid {0, s, 2s, ...} is symmetric under the point group only on odd-sized maps.

    ``crop``: how much smaller than the input the grid of kernel centres is (``k - 1`` without padding, else 0).
    ``spatial_dims``: 2 (the last two dims, pixel grids) or 3 (voxel grids, every side must be odd).
    """
    grid = _grid(x, spatial_dims)
    centres = tuple(n - crop for n in grid)
    if stride > 1 and any(n % 2 == 0 for n in centres):
        size = "x".join(map(str, grid))
        where = f"{size} map" + (f" ({'x'.join(map(str, centres))} kernel centres without padding)" if crop else "")
        if spatial_dims == 2:
            why = "symmetric under 90-degree rotations only when height and width are odd"
            pools = "SpatialMaxPool2d / SpatialAvgPool2d"
        else:
            why = "symmetric under the cube's rotations only when depth, height and width are odd"
            pools = "SpatialMaxPool3d / SpatialAvgPool3d"
        raise ValueError(
            f"{layer}: stride {stride} on a {where} is not exactly equivariant: the sampling "
            f"grid of a strided layer is {why}. Use stride 1 followed by {pools}, or feed an odd-sized map."
        )


def check_input(x: torch.Tensor, channels: int, group: Group, lifting: bool, layer: str) -> None:
    """An image batch for a lifting layer (input on the plane), else a group feature map of ``group``."""
    if lifting:
        check_image(x, channels, layer, group.spatial_dims)
    else:
        check_feature_map(x, channels, group, layer)
