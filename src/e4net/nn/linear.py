"""A linear map applied alike at every pixel and every group slot (``N2(g) = {g}`` in Eq. 12).

Used by the E4 layer when the concatenation along ``A`` is switched off (``concat``, Table 2) and as the 1 x 1
query / key / value / output maps of the self-attention layers (Eq. 6).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_positive
from ._gemm import shared_weight_bmm

__all__ = ["SlotwiseLinear"]


class SlotwiseLinear(nn.Module):
    """The same linear map ``C_in -> C_out`` at every pixel and every group slot (``N2(g) = {g}``).

    Equivariant because it commutes with every permutation of the group axis and of the pixels.
    Params ``C_out C_in`` (+ ``C_out`` bias); MACs ``C_out C_in |A| h w``.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__()
        self.in_channels = check_positive(in_channels, "in_channels", type(self).__name__)
        self.out_channels = check_positive(out_channels, "out_channels", type(self).__name__)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(6.0 / self.in_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, add_bias: bool = True) -> torch.Tensor:
        """``add_bias=False`` leaves the bias to the caller (E4Conv fuses it into the aggregation)."""
        if x.dim() not in (5, 6) or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SlotwiseLinear: expected (B, {self.in_channels}, |G|, H, W) or (B, {self.in_channels}, |G|, D, H, W), "
                f"got {tuple(x.shape)}"
            )
        b, c = x.shape[:2]
        # One batched GEMM on the (B, C, |A| H W) layout: no transposed copies (unlike matmul / a 1x1 conv2d).
        y = shared_weight_bmm(self.weight, x.reshape(b, c, -1))
        if self.bias is not None and add_bias:
            y = y.add_(self.bias.view(1, -1, 1))  # in place: the GEMM's backward does not need its output
        return y.view(b, self.out_channels, *x.shape[2:])

    def count_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        return output[0].numel() * self.in_channels

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}"
