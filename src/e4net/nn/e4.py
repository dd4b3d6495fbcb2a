"""The E4 layer (Eq. 11-12, Fig. 1): a kernel generator K and an encoder V over the concatenation along A,
dynamic per-pixel kernels transformed per group element, and a depthwise spatial aggregation.

    f'(g) = sum_{g~ in N1(g)}  K_{g^-1 g~}( U_{g' in N2(g)} f(g') )  ⊙  V( U_{g~' in N2(g~)} f(g~') )       (Eq. 12)

* ``N2(g) = {g (0, a) : a in A}`` -- the concatenation along the group's rotation/reflection part, in the order
  of :meth:`e4net.groups.Group.elements`. A linear map of that concatenation is a group 1x1 convolution
  (:class:`~e4net.nn.conv.GroupConv` with ``kernel_size=1``). ``concat="none"`` uses ``N2(g) = {g}`` instead:
  the same linear map on every group slot (:class:`~e4net.nn.linear.SlotwiseLinear`). Table 2 switches this for K and V.
* ``K~(x) = W2 ReLU(Norm(W1 x))`` (Sec. 4.1) with ``W1: C_in|A| -> C_in/r`` and ``W2: C_in/r -> s k^2``
  produces ``s`` k x k kernels per pixel and group element; output channel ``i`` uses slice ``i mod s``.
  ``Norm`` is per example by default (:class:`~e4net.nn.GroupInstanceNorm`, as in the authors' code, which uses a
  per-example GroupNorm there); a batch norm (``generator_norm="batch"``) makes a stack of E4 layers train far
  more slowly (measured on the digits: E4-Net at 90% test error after 100 Adam steps, against 39% per example).
* ``N1(g) = {g (v, e) : v in Omega}``: the spatial k x k neighbourhood *in the frame of g*. The kernel generated
  at ``g = (x, a)`` is therefore transformed by ``a`` before it is applied, so it always acts at the relative
  position ``g^-1 g~`` (Theorem 1). The aggregation is done by a backend of :mod:`e4net.backends`.

Cost (Sec. 4.2, ``c = C_in = C_out``): params ``c^2|A|(1 + 1/r) + c s k^2 / r`` (+ the norm's ``2c/r`` affine
parameters + the generator's ``s k^2`` bias + ``c`` output bias if ``bias=True``); MACs
``(1 + 1/r) c^2 |A|^2 hw + (1 + s/r) k^2 c |A| hw``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..backends import aggregate_generated, check_backend
from ..groups import Group, resolve
from ._checks import (
    check_exact_stride,
    check_feature_map,
    check_kernel_size,
    check_positive,
    check_stride,
    observed,
)
from ._gemm import pair_applies, shared_input_pair
from .aggregation import GroupAggregation
from .conv import GroupConv
from .linear import SlotwiseLinear
from .norm import GroupBatchNorm, GroupInstanceNorm, norm_relu

CONCAT_MODES = ("both", "kernel", "value", "none")


GENERATOR_NORMS = ("instance", "batch")


class E4Conv(GroupAggregation):
    """The E4 layer of Eq. 12 on p4 / p4m feature maps ``(B, C_in, |A|, H, W) -> (B, C_out, |A|, H', W')``,
    and on O / Oh feature maps ``(B, C_in, |A|, D, H, W)`` with k x k x k generated kernels (``|Omega| = k^3``).

    Args:
        in_channels, out_channels: numbers of fields.
        kernel_size: odd spatial size k of the generated kernels (|Omega| = k^2).
        group: ``"p4"``, ``"p4m"`` or a :class:`~e4net.groups.Group`.
        reduction: reduction ratio r of the kernel generator (hidden width ``max(1, C_in // r)``).
        slices: number s of kernels generated per pixel and group element; ``out_channels % s == 0``.
        stride: output grid subsampling; > 1 only on odd-sized maps (exactness, see ``check_exact_stride``).
        concat: where the concatenation along A is used: ``"both"`` (K and V), ``"kernel"``, ``"value"``, ``"none"``.
        backend: aggregation backend name (:func:`e4net.backends.available_backends`), ``"auto"`` by default;
            validated, also when set later (``layer.backend = ...``, or :func:`e4net.nn.set_backend` for a model).
        bias: add a learnable per-field output bias (shared over the group).
        generator_norm: the norm inside the kernel generator: ``"instance"`` (per example,
            :class:`~e4net.nn.GroupInstanceNorm`, the default) or ``"batch"`` (:class:`~e4net.nn.GroupBatchNorm`).

    An instance of :class:`~e4net.nn.aggregation.GroupAggregation` (Eq. 9 with ``H~ = K ⊙ V``, Eq. 11) with
    ``N1(e) = Omega``: the buffer ``relative_position_index`` is its relative-position table
    (:meth:`e4net.groups.Group.relative_position_index` with ``over_group=False``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: str | Group,
        reduction: int = 1,
        slices: int = 2,
        stride: int = 1,
        concat: str = "both",
        backend: str = "auto",
        bias: bool = False,
        generator_norm: str = "instance",
    ):
        super().__init__()
        name = type(self).__name__
        self.in_channels = check_positive(in_channels, "in_channels", name)
        self.out_channels = check_positive(out_channels, "out_channels", name)
        self.kernel_size = check_kernel_size(kernel_size, name)
        self.group = resolve(group)
        self.reduction = check_positive(reduction, "reduction", name)
        self.slices = check_positive(slices, "slices", name)
        self.stride = check_stride(stride, name)
        if out_channels % slices:
            raise ValueError(f"{name}: out_channels ({out_channels}) must be divisible by slices ({slices})")
        if concat not in CONCAT_MODES:
            raise ValueError(f"{name}: concat must be one of {CONCAT_MODES}, got {concat!r}")
        self.concat = concat
        if generator_norm not in GENERATOR_NORMS:
            raise ValueError(f"{name}: generator_norm must be one of {GENERATOR_NORMS}, got {generator_norm!r}")
        self.generator_norm = generator_norm
        self.backend = check_backend(backend)
        self.hidden_channels = max(1, in_channels // reduction)
        k2 = kernel_size**self.group.spatial_dims  # |Omega|: k^2 on pixel grids, k^3 on voxel grids

        def linear(cin: int, cout: int, mix: bool) -> nn.Module:
            return GroupConv(cin, cout, 1, self.group) if mix else SlotwiseLinear(cin, cout)

        # Encoder V and kernel generator K~ = W2 ReLU(Norm(W1 .)), Sec. 4.1.
        self.value = linear(in_channels, out_channels, concat in ("both", "value"))
        self.reduce = linear(in_channels, self.hidden_channels, concat in ("both", "kernel"))
        norm = GroupInstanceNorm if generator_norm == "instance" else GroupBatchNorm
        self.norm = norm(self.hidden_channels, self.group)
        self.span = SlotwiseLinear(self.hidden_channels, slices * k2, bias=True)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._register_relative_position_index()
        self.reset_parameters()

    @property
    def backend(self) -> str:
        """The aggregation backend (:mod:`e4net.backends`); setting it validates the name."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        self._backend = check_backend(name)

    def reset_parameters(self) -> None:
        for m in (self.value, self.reduce, self.norm, self.span):
            m.reset_parameters()
        # The generated kernel K = W2 h + b starts as a random *static* depthwise kernel (the bias b, variance 1/k^2,
        # so the aggregation keeps the variance of V) plus a small input-dependent part (W2 at a tenth of the default
        # scale). Zero-mean dynamic kernels of full scale at init scramble every pixel's neighbourhood and make a
        # stack of E4 layers hard to train (measured: a 6-layer E4-Net did not learn in 50 steps; with this it does).
        nn.init.uniform_(
            self.span.weight, -0.1 / math.sqrt(self.hidden_channels), 0.1 / math.sqrt(self.hidden_channels)
        )
        if self.span.bias is not None:
            bound = math.sqrt(3.0) / self.kernel_size
            nn.init.uniform_(self.span.bias, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def generate_kernels(self, x: torch.Tensor, add_bias: bool = True) -> torch.Tensor:
        """K~ at every output position: ``(B, s, k*k, |A|, H', W')``, untransformed (frame of each slot);
        ``(B, s, k^3, |A|, D', H', W')`` on voxel grids.

        ``add_bias=False`` omits W2's bias (:meth:`forward` hands it to the aggregation, which fuses it).
        """
        return self._span(self.generator_hidden(x), add_bias)

    def _span(self, hidden: torch.Tensor, add_bias: bool) -> torch.Tensor:
        t = self.span(hidden, add_bias=add_bias)
        b, _, n = t.shape[:3]
        return t.view(b, self.slices, self.kernel_size**self.group.spatial_dims, n, *t.shape[3:])

    def generator_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``h = ReLU(Norm(W1 x))`` on the output grid: the input of the generator's last map ``W2`` (``span``),
        Sec. 4.1."""
        d = self.group.spatial_dims
        if self.stride > 1:
            x = x[(..., *([slice(None, None, self.stride)] * d))]
        return norm_relu(self.norm, self.reduce(x))

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``V x`` and the generator's hidden features. With the concatenation in both (two group 1x1 convolutions of
        the same input), on float32 CPU tensors, V and W1 run as one GEMM over the batch whose results the norm and
        the aggregation read in place (:func:`e4net.nn._gemm.shared_input_pair`); else module by module."""
        fused = (
            type(self.value) is GroupConv  # (concat "both"; not a module put in its place)
            and type(self.reduce) is GroupConv
            and self.stride == 1
            and self.value.bias is None
            and self.reduce.bias is None
            and pair_applies(x)
            and not observed(self.value, self.reduce)
        )
        if not fused:
            return self.value(x), self.generator_hidden(x)
        b, c, n = x.shape[:3]
        wv = self.value._forward_bank().view(-1, c * n)
        w1 = self.reduce._forward_bank().view(-1, c * n)
        v, h = shared_input_pair(x.reshape(b, c * n, -1), wv, w1)
        grid = x.shape[3:]
        return v.view(b, self.out_channels, n, *grid), norm_relu(self.norm, h.view(b, self.hidden_channels, n, *grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_feature_map(x, self.in_channels, self.group, name)
        check_exact_stride(x, self.stride, name, spatial_dims=self.group.spatial_dims)
        v, hidden = self._encode(x)
        # W2 is handed to the aggregation: a backend may generate each kernel W2 h + b where it is used (numba: on
        # voxel grids always, k^3 kernels are big; on pixel grids in inference). On pixel grids a stored kernel
        # tensor comes from the span module, which therefore runs as a module -- and stays unfused -- when hooks
        # observe it (e.g. e4net.count's).
        y = aggregate_generated(
            v, hidden, self.span.weight, self.span.bias, self.relative_position_index, self.stride, self.backend,
            make_kernels=(lambda: self._span(hidden, add_bias=False)) if self.group.spatial_dims == 2 else None,
            fuse=self.group.spatial_dims == 3 or not observed(self.span),
        )  # fmt: skip
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * (self.group.spatial_dims + 1)))
        return y

    def count_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """The aggregation (``k^2 C_out |A| H' W'``, ``k^3 ... D' H' W'`` on voxel grids); V, W1, W2 are counted by
        their own modules, except on voxel grids, where W2 (``span``) runs inside the aggregation
        (:func:`e4net.backends.aggregate_generated`) and its ``C_h s k^3 |A| D' H' W'`` are counted here."""
        kd = self.kernel_size**self.group.spatial_dims
        macs = output[0].numel() * kd
        if self.group.spatial_dims == 3:
            macs += output[0].numel() // self.out_channels * self.hidden_channels * self.slices * kd
        return macs

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, group={self.group.name}, "
            f"reduction={self.reduction}, slices={self.slices}"
        )
        if self.stride != 1:
            s += f", stride={self.stride}"
        s += f", concat={self.concat!r}, generator_norm={self.generator_norm!r}"
        return s + f", backend={self.backend!r}, bias={self.bias is not None}"
