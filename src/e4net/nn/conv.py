"""Lifting convolution (Sec. 3.2, first layer) and group convolution (G-CNN, Eq. 5): the one implementation of Eq. 5.

Both are instances of :class:`~e4net.nn.aggregation.GroupAggregation` (Eq. 9 with ``H~`` a shared linear kernel):
the filter for output slot ``a`` is the learnable kernel transformed by ``a``, i.e. gathered with the group's
relative-position table (:meth:`e4net.groups.Group.relative_position_index`, the buffer ``relative_position_index``);
then a single ``conv2d`` runs: one large matrix product. For a group on voxel grids (O, Oh: ``spatial_dims = 3``)
the kernels are k x k x k and the call is ``conv3d``; the group decides which.

Padding. ``padding="same"`` (zero padding ``k // 2``) keeps the map size; the output grid is the input grid, and
the kernel needs a centre pixel (odd k) for its rotation about that pixel to be exact. ``padding="valid"`` (no
padding, as the P4CNN of Cohen & Welling [5]: 28 -> 26 -> 24 -> ... -> 4 -> 1) evaluates the layer only where the
kernel fits and accepts *even* k: the output grid ``{0 .. H-k}`` is mapped onto itself by the point group (its
centre ``(H-k)/2 + (k-1)/2 = (H-1)/2`` is the input's centre), and an even kernel rotates exactly about its own
centre, so the layer stays exactly equivariant. The 4x4 last layer of P4CNN needs this.

Inference caches the filter bank. In eval mode, when autograd does not need the gather (grad disabled, or a weight
that requires no grad), ``forward`` reuses the bank built last time until the weight changes: another tensor or
storage (``data_ptr``: ``load_state_dict`` with ``assign``, ``.double()``, ``.to(device)``), or an in-place write
(the weight's ``_version`` counter: optimiser steps, ``load_state_dict``, ``weight.add_`` under ``no_grad``), a
changed relative-position table, or a ``filter_bank`` replaced on the instance. Writes
through ``weight.data`` bypass the version counter and are not seen; call ``clear_cache()`` after them.
``train()`` / ``eval()`` clear the cache; training mode and graph capture (``torch.compile`` / ``torch.export``) never
use it. ``filter_bank()`` itself always builds the bank afresh.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, resolve
from ._checks import (
    check_exact_stride,
    check_feature_map,
    check_fits,
    check_image,
    check_padding,
    check_positive,
    check_stride,
)
from ._gemm import shared_weight_bmm
from .aggregation import GroupAggregation, gather_relative


class _GroupConvBase(GroupAggregation):
    group: Group

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: str | Group,
        stride: int,
        bias: bool,
        padding: str,
    ):
        super().__init__()
        name = type(self).__name__
        self.in_channels = check_positive(in_channels, "in_channels", name)
        self.out_channels = check_positive(out_channels, "out_channels", name)
        self.padding, self.kernel_size = check_padding(padding, kernel_size, name)
        self.stride = check_stride(stride, name)
        self.group = resolve(group)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._register_relative_position_index()
        self._bank_cache: tuple[tuple, torch.Tensor] | None = None

    def clear_cache(self) -> None:
        """Forget the cached filter bank (module docstring); the next eval-mode forward builds it again."""
        self._bank_cache = None

    def train(self, mode: bool = True) -> _GroupConvBase:
        self._bank_cache = None
        return super().train(mode)

    def _forward_bank(self) -> torch.Tensor:
        """The filter bank for ``forward``: cached in inference (module docstring), built afresh otherwise."""
        w = self.weight
        grad = torch.is_grad_enabled() and w.requires_grad
        if torch.compiler.is_compiling() or self.training or grad or w.is_inference():
            self._bank_cache = None
            return self.filter_bank()
        table, build = self.relative_position_index, self.filter_bank
        key = (
            (id(w), w.data_ptr(), w._version, w.dtype, w.device, tuple(w.shape)),
            (id(table), table.data_ptr(), table._version),  # the relative-position table too
            getattr(build, "__func__", build),  # and how the bank is built (e.g. replaced on the instance)
        )
        if self._bank_cache is None or self._bank_cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable outside inference mode too
                self._bank_cache = (key, build())
        return self._bank_cache[1]

    def _fan_in(self) -> int:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        # He-uniform for ReLU networks, with the true fan-in of one output (all input fields and group slots).
        fan_in = self._fan_in()
        bound = math.sqrt(6.0 / fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))

    def _pad(self) -> int:
        return self.kernel_size // 2 if self.padding == "same" else 0

    def _check_grid(self, x: torch.Tensor) -> None:
        name, d = type(self).__name__, self.group.spatial_dims
        if self.padding == "valid":
            check_fits(x, self.kernel_size, name, d)
        check_exact_stride(
            x, self.stride, name, crop=self.kernel_size - 1 if self.padding == "valid" else 0, spatial_dims=d
        )

    def _kernel_shape(self) -> tuple[int, ...]:
        """``(k, k)`` on pixel grids, ``(k, k, k)`` on voxel grids."""
        return (self.kernel_size,) * self.group.spatial_dims

    def _conv(self, x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        """``conv2d`` or ``conv3d``, by the group's number of spatial dims."""
        conv = F.conv3d if self.group.spatial_dims == 3 else F.conv2d
        return conv(x, bank, None, self.stride, self._pad())

    def _finish(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        d = self.group.spatial_dims
        y = y.view(batch, self.out_channels, self.group.order, *y.shape[-d:])
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * (d + 1)))
        return y

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, group={self.group.name}"
        if self.stride != 1:
            s += f", stride={self.stride}"
        if self.padding != "same":
            s += f", padding={self.padding!r}"
        return s + f", bias={self.bias is not None}"


class LiftingConv(_GroupConvBase):
    """Lift images ``(B, Cin, H, W)`` to group feature maps ``(B, Cout, |A|, H', W')`` (Eq. 5 on the plane).

    ``f'(x, a) = sum_y psi(a^-1 (y - x)) f(y)``: output slot ``a`` correlates with the kernel transformed by ``a``.
    On voxel grids (O, Oh): ``(B, Cin, D, H, W) -> (B, Cout, |A|, D', H', W')`` with k^3 kernels (k^2 -> k^3 below).
    ``padding="same"``: zero padding ``k // 2``, odd k, ``H' = H`` (at stride 1); ``padding="valid"``: no padding,
    any k, ``H' = H - k + 1``. Params ``Cout Cin k^2``; MACs ``Cout |A| Cin k^2 H' W'``.
    An instance of :class:`~e4net.nn.aggregation.GroupAggregation` with input on the plane (``lifting``, ``N(e) = Omega``).
    """

    lifting = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: str | Group,
        stride: int = 1,
        bias: bool = False,
        padding: str = "same",
    ):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, bias, padding)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self._kernel_shape()))
        self.reset_parameters()

    def _fan_in(self) -> int:
        return self.in_channels * self.kernel_size**self.group.spatial_dims

    def filter_bank(self) -> torch.Tensor:
        """The ``(Cout |A|, Cin, k, k)`` filters of one ``conv2d`` (``(..., k, k, k)`` of one ``conv3d``)."""
        d = self.group.spatial_dims
        bank = gather_relative(self.weight.flatten(-d), self.relative_position_index)  # (Cout, Cin, |A|, k^d)
        return bank.transpose(1, 2).reshape(-1, self.in_channels, *self._kernel_shape())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_channels, type(self).__name__, self.group.spatial_dims)
        self._check_grid(x)
        y = self._conv(x, self._forward_bank())
        return self._finish(y, x.shape[0])

    def count_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        return output[0].numel() * self.in_channels * self.kernel_size**self.group.spatial_dims


class GroupConv(_GroupConvBase):
    """Group convolution on p4 / p4m feature maps, the G-CNN layer of Eq. 5.

    ``f'(x, a) = sum_{y, b} W(a^-1 (y - x), a^-1 b) f(y, b)``: ``weight[o, i, b]`` is the k x k kernel at relative
    group position ``b = g^-1 g~`` (Theorem 1); the filter for output slot ``a`` is ``T_a W`` (regular action).
    ``padding`` as :class:`LiftingConv` (``"valid"``: the unpadded layers of P4CNN, even k allowed).
    Params ``Cout Cin |A| k^2``; MACs ``Cout |A| Cin |A| k^2 H' W'`` (``c^2 k^2 |A|^2 h w``, Sec. 4.2); on voxel grids
    (O, Oh) Eq. 5 in 3-D: k^3 kernels, ``conv3d``, MACs ``c^2 k^3 |A|^2 d h w``.
    An instance of :class:`~e4net.nn.aggregation.GroupAggregation` with ``N(e) = Omega x A``.
    """

    over_group = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: str | Group,
        stride: int = 1,
        bias: bool = False,
        padding: str = "same",
    ):
        super().__init__(in_channels, out_channels, kernel_size, group, stride, bias, padding)
        n = self.group.order
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, n, *self._kernel_shape()))
        self.reset_parameters()

    def _fan_in(self) -> int:
        return self.in_channels * self.group.order * self.kernel_size**self.group.spatial_dims

    def filter_bank(self) -> torch.Tensor:
        """The ``(Cout |A|, Cin |A|, k, k)`` filters of one ``conv2d`` (``(..., k, k, k)`` of one ``conv3d``)."""
        n, d = self.group.order, self.group.spatial_dims
        bank = gather_relative(self.weight.flatten(-d - 1), self.relative_position_index)  # (Cout, Cin, |A|, |A| k^d)
        return bank.transpose(1, 2).reshape(self.out_channels * n, self.in_channels * n, *self._kernel_shape())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.in_channels, self.group, type(self).__name__)
        self._check_grid(x)
        b, c, n = x.shape[:3]
        grid = x.shape[3:]
        if self.kernel_size == 1 and self.stride == 1:  # 1x1 (E4 generator / encoder): one batched GEMM, no conv2d
            weight = self._forward_bank().view(self.out_channels * n, c * n)
            return self._finish(shared_weight_bmm(weight, x.reshape(b, c * n, -1)).view(b, -1, *grid), b)
        y = self._conv(x.reshape(b, c * n, *grid), self._forward_bank())
        return self._finish(y, b)

    def count_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        return output[0].numel() * self.in_channels * self.group.order * self.kernel_size**self.group.spatial_dims
