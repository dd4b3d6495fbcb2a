"""Building blocks shared by the model families (not layers of the paper on their own).

* :class:`ValidLiftingConv` / :class:`ValidGroupConv`: lifting and group convolutions *without padding*
  ("valid"), as in the P4CNN of Cohen & Welling [5] (28 -> 26 -> 24 -> ... -> 4 -> 1). They use the filter banks
  of :mod:`e4net.groups` like :class:`~e4net.nn.LiftingConv` / :class:`~e4net.nn.GroupConv`, and accept *even*
  kernel sizes: without padding the output grid ``{0 .. H-k}`` is mapped onto itself by the point group
  (its centre ``(H-k)/2 + (k-1)/2 = (H-1)/2`` is the input's centre), and an even kernel rotates exactly about
  its own centre, so the layer stays exactly equivariant. The 4x4 last layer of P4CNN needs this.
* :func:`conv_bn_act`: the usual ``conv -> norm -> ReLU (-> dropout)`` stack.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, resolve
from ..nn._checks import check_feature_map, check_image, check_positive


class _ValidBase(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, group: str | Group, lifting: bool):
        super().__init__()
        name = type(self).__name__
        self.in_channels = check_positive(in_channels, "in_channels", name)
        self.out_channels = check_positive(out_channels, "out_channels", name)
        self.kernel_size = check_positive(kernel_size, "kernel_size", name)
        self.group = resolve(group)
        n = 1 if lifting else self.group.order
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, *((n,) if not lifting else ()), kernel_size, kernel_size)
        )
        fan_in = in_channels * n * kernel_size**2
        bound = math.sqrt(6.0 / fan_in)
        nn.init.uniform_(self.weight, -bound, bound)

    def _check_size(self, x: torch.Tensor) -> None:
        if x.shape[-2] < self.kernel_size or x.shape[-1] < self.kernel_size:
            raise ValueError(
                f"{type(self).__name__}: a {x.shape[-2]}x{x.shape[-1]} map is smaller than the {self.kernel_size}x"
                f"{self.kernel_size} kernel of this unpadded convolution"
            )

    def count_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        return output[0].numel() * self.weight[0].numel()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, group={self.group.name}, padding=0"


class ValidLiftingConv(_ValidBase):
    """Lifting convolution without padding: ``(B, Cin, H, W) -> (B, Cout, |A|, H-k+1, W-k+1)``.

    Same map as :class:`~e4net.nn.LiftingConv` (``f'(x, a) = sum_y psi(a^-1 (y - x)) f(y)``), evaluated only where
    the kernel fits inside the image. Params ``Cout Cin k^2``; MACs ``Cout |A| Cin k^2 H' W'``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, group: str | Group):
        super().__init__(in_channels, out_channels, kernel_size, group, lifting=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_channels, type(self).__name__)
        self._check_size(x)
        k = self.kernel_size
        bank = self.group.image_filter_bank(self.weight).reshape(-1, self.in_channels, k, k)
        y = F.conv2d(x, bank)
        return y.view(x.shape[0], self.out_channels, self.group.order, y.shape[-2], y.shape[-1])


class ValidGroupConv(_ValidBase):
    """Group convolution (Eq. 5) without padding: ``(B, Cin, |A|, H, W) -> (B, Cout, |A|, H-k+1, W-k+1)``.

    Same map as :class:`~e4net.nn.GroupConv`, evaluated only where the kernel fits. Params ``Cout Cin |A| k^2``;
    MACs ``Cout |A| Cin |A| k^2 H' W'``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, group: str | Group):
        super().__init__(in_channels, out_channels, kernel_size, group, lifting=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.in_channels, self.group, type(self).__name__)
        self._check_size(x)
        b, c, n, h, w = x.shape
        k = self.kernel_size
        bank = self.group.group_filter_bank(self.weight).reshape(self.out_channels * n, c * n, k, k)
        y = F.conv2d(x.reshape(b, c * n, h, w), bank)
        return y.view(b, self.out_channels, n, y.shape[-2], y.shape[-1])


def conv_bn_act(conv: nn.Module, channels: int, group: Group, dropout: float = 0.0, act: bool = True) -> nn.Sequential:
    """``conv -> GroupBatchNorm -> ReLU -> Dropout(p)`` (ReLU / dropout optional)."""
    from ..nn import GroupBatchNorm

    layers: list[nn.Module] = [conv, GroupBatchNorm(channels, group)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
