"""Group batch norm and group instance norm: statistics and affine parameters shared over the group axis.

Sharing over the group axis is what keeps the layer equivariant for *any* affine weights training can reach:
a per-group-slot scale would be equivariant at init (all ones) and broken after one optimiser step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, resolve
from ._checks import check_feature_map, check_positive


class GroupBatchNorm(nn.BatchNorm3d):
    """Batch norm of ``(B, C, |A|, H, W)`` feature maps with one mean/var/weight/bias per field ``C``.

    The statistics are taken over batch, group axis and space, exactly ``nn.BatchNorm3d`` on this layout;
    the module adds the group and the input checks. On voxel grids (O, Oh) the input is ``(B, C, |A|, D, H, W)``
    (``F.batch_norm`` takes any rank; the check follows the group).
    """

    def __init__(
        self,
        channels: int,
        group: str | Group,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        check_positive(channels, "channels", type(self).__name__)
        super().__init__(channels, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats)
        self.group = resolve(group)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        check_feature_map(input, self.num_features, self.group, type(self).__name__)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group={self.group.name}"


class GroupInstanceNorm(nn.Module):
    """Per-example normalisation of ``(B, C, |A|, H, W)`` feature maps: one mean/var per example and field, taken
    over the group axis and space; one affine weight/bias per field.

    ``nn.GroupNorm(C, C)`` on this layout. The statistics of a field are a function of the whole orbit of its
    group slots and pixels, so they are unchanged when the input is transformed: the layer is equivariant for any
    affine parameters (shared over the group axis, like :class:`GroupBatchNorm`). Used in the kernel generator of
    :class:`~e4net.nn.E4Conv`, where it makes the generated kernels independent of the other examples in the
    batch (and of train/eval mode).
    """

    def __init__(self, channels: int, group: str | Group, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_features = check_positive(channels, "channels", type(self).__name__)
        self.group = resolve(group)
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(channels)) if affine else None
        self.bias = nn.Parameter(torch.empty(channels)) if affine else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.num_features, self.group, type(self).__name__)
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}, group={self.group.name}"
