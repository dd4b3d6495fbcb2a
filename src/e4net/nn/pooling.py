"""Pooling over the group axis (invariance) and exact spatial down-sampling of group feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive


def _check_rank5(x: torch.Tensor, layer: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{layer}: expected a group feature map (B, C, |G|, H, W) of rank 5, got {shape}")


class GroupMaxPool(nn.Module):
    """Max over the group axis: ``(B, C, |A|, H, W) -> (B, C, H, W)``, invariant in the group axis [5]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rank5(x, type(self).__name__)
        return x.amax(dim=2)


class GroupAvgPool(nn.Module):
    """Mean over the group axis: ``(B, C, |A|, H, W) -> (B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rank5(x, type(self).__name__)
        return x.mean(dim=2)


class _SpatialPool(nn.Module):
    def __init__(self, kernel_size: int = 2):
        super().__init__()
        self.kernel_size = check_positive(kernel_size, "kernel_size", type(self).__name__)

    def _check(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected (B, C, H, W) or (B, C, |G|, H, W), got {shape}")
        k = self.kernel_size
        if x.shape[-2] % k or x.shape[-1] % k:
            raise ValueError(
                f"{name}: a {x.shape[-2]}x{x.shape[-1]} map is not divisible into {k}x{k} windows; the windows "
                f"would not map onto each other under rotation, so pooling would not be exactly equivariant"
            )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"

    def _pool(self, x: torch.Tensor, fn) -> torch.Tensor:
        self._check(x)
        if x.dim() == 4:
            return fn(x, self.kernel_size)
        b, c, n, h, w = x.shape
        y = fn(x.reshape(b, c * n, h, w), self.kernel_size)
        return y.view(b, c, n, y.shape[-2], y.shape[-1])


class SpatialMaxPool2d(_SpatialPool):
    """k x k max pooling with stride k on each group slot; exact when H and W are divisible by k."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(x, F.max_pool2d)


class SpatialAvgPool2d(_SpatialPool):
    """k x k average pooling with stride k on each group slot; exact when H and W are divisible by k."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(x, F.avg_pool2d)


class GlobalMaxPool(nn.Module):
    """Max over space (and the group axis if ``group_pool``): returns ``(B, C)``."""

    def __init__(self, group_pool: bool = True):
        super().__init__()
        self.group_pool = group_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).amax(-1) if self.group_pool or x.dim() == 4 else x.amax((-2, -1))


class GlobalAvgPool(nn.Module):
    """Mean over space (and the group axis if ``group_pool``): returns ``(B, C)``."""

    def __init__(self, group_pool: bool = True):
        super().__init__()
        self.group_pool = group_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1) if self.group_pool or x.dim() == 4 else x.mean((-2, -1))


__all__ = ["GroupMaxPool", "GroupAvgPool", "SpatialMaxPool2d", "SpatialAvgPool2d", "GlobalMaxPool", "GlobalAvgPool"]
