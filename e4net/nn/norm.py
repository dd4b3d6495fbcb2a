"""Group batch norm: statistics and affine parameters shared over the group axis.

Sharing over the group axis is what keeps the layer equivariant for *any* affine weights training can reach:
a per-group-slot scale would be equivariant at init (all ones) and broken after one optimiser step.
"""

from __future__ import annotations

import torch
from torch import nn

from ..groups import Group, resolve
from ._checks import check_feature_map, check_positive


class GroupBatchNorm(nn.BatchNorm3d):
    """Batch norm of ``(B, C, |A|, H, W)`` feature maps with one mean/var/weight/bias per field ``C``.

    The statistics are taken over batch, group axis and space, exactly ``nn.BatchNorm3d`` on this layout;
    the module adds the group and the input checks.
    """

    def __init__(self, channels: int, group: str | Group, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True):
        check_positive(channels, "channels", type(self).__name__)
        super().__init__(channels, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats)
        self.group = resolve(group)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        check_feature_map(input, self.num_features, self.group, type(self).__name__)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group={self.group.name}"
