"""Group batch norm and group instance norm: statistics and affine parameters shared over the group axis.

Sharing over the group axis is what keeps the layer equivariant for *any* affine weights training can reach:
a per-group-slot scale would be equivariant at init (all ones) and broken after one optimiser step.

:func:`norm_relu` runs ``ReLU(norm(x))`` for either norm, fused on float CPU tensors (:mod:`._norm_relu`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, resolve
from . import _norm_relu
from ._checks import check_feature_map, check_positive, observed


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


_FUSED = (GroupBatchNorm, GroupInstanceNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
"""The norms :func:`norm_relu` fuses, by exact type: a subclass may change ``forward`` (e.g. ``nn.SyncBatchNorm``,
whose statistics span processes), so it runs as a module."""


def norm_relu(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ReLU(norm(x))`` with ``norm``'s parameters, statistics and buffers, exactly as the two modules in sequence
    (a batch norm in training mode updates its running statistics and ``num_batches_tracked`` the same way).

    On float CPU tensors in eager mode this is one pass over memory each way instead of five, and only ``x`` is
    kept for the backward pass (:mod:`e4net.nn._norm_relu`; results equal up to float rounding). Elsewhere, for other
    modules (any ``norm`` works: ``ReLU(norm(x))``), under ``torch.fx`` tracing, or when forward hooks observe
    ``norm`` (e.g. :func:`e4net.count`'s), it runs ``norm`` and an in-place ReLU.
    """
    if type(norm) not in _FUSED:
        return F.relu(norm(x))  # not in place: the module's output may be its input (nn.Identity)
    if isinstance(x, torch.fx.Proxy) or not _norm_relu.applies(x) or observed(norm):
        return F.relu(norm(x), inplace=True)  # the norms' backward passes do not need their output
    if isinstance(norm, GroupInstanceNorm):
        check_feature_map(x, norm.num_features, norm.group, type(norm).__name__)
        mean, var, _ = _norm_relu.moments(x, per_example=True)
        return _norm_relu.norm_relu(x, norm.weight, norm.bias, mean, var, norm.eps, from_x=True, per_example=True)
    norm._check_input_dim(x)
    factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)  # as nn.BatchNorm3d.forward
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    running = norm.running_mean is not None and norm.running_var is not None
    if norm.training or not running:
        mean, var, n = _norm_relu.moments(x, per_example=False)
        if n <= 1:  # torch's error: "Expected more than 1 value per channel when training"
            return F.relu(F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps), inplace=True)
        if norm.training and running:
            with torch.no_grad():
                rm, rv = norm.running_mean, norm.running_var
                rm.mul_(1 - factor).add_(torch.from_numpy(mean).to(rm.dtype), alpha=factor)
                rv.mul_(1 - factor).add_(torch.from_numpy(var * (n / (n - 1))).to(rv.dtype), alpha=factor)
        return _norm_relu.norm_relu(x, norm.weight, norm.bias, mean, var, norm.eps, from_x=True, per_example=False)
    mean = norm.running_mean.detach().double().numpy()
    var = norm.running_var.detach().double().numpy()
    return _norm_relu.norm_relu(x, norm.weight, norm.bias, mean, var, norm.eps, from_x=False, per_example=False)
