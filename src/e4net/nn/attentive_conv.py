"""The attentive group convolution after Romero et al. 2020 (ref. [23], "Attentive group equivariant convolutional
networks", the alpha-p4-CNN layer): an instance of Eq. 9.

Every contribution ``c[o, a, i, b](x) = sum_u W(a^-1 u, a^-1 b) f_i(x + u, b)`` of the group convolution (Eq. 5) is
modulated before it is summed,

    f'_o(x, a) = sum_{i, b} c[o, a, i, b](x) (1 - alpha_C[o, a, i, b] alpha_S[o, a](x)),

by a channel attention ``alpha_C`` (a two-layer MLP per output field on the spatial mean and max of the
contributions, weights indexed by the relative group element ``a^-1 b``) and a spatial attention ``alpha_S``
(a 7 x 7 convolution over the mean and max along the input fields, kernel on ``Omega x A`` indexed by
``g^-1 g~``). All relative-position-indexed weights go through the group's table
(:meth:`e4net.groups.Group.relative_position_index`), so the attention maps are computed equivariantly.

The cost is quadratic in the neighbourhood: every contribution of the group convolution is materialised.
``count_macs`` counts the layer's own work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, resolve
from ._checks import check_fits, check_input, check_kernel_size, check_padding, check_positive
from .aggregation import GroupAggregation, gather_relative

__all__ = ["AttentiveGroupConv", "AttentiveLiftingConv"]


class AttentiveGroupConv(GroupAggregation):
    """Attentive group convolution (Romero et al. 2020) ``(B, C_in, |A|, H, W) -> (B, C_out, |A|, H', W')``.

    Args:
        in_channels, out_channels: numbers of fields.
        kernel_size: spatial size k of the group-convolution kernel (odd for ``padding="same"``; any with "valid").
        group: ``"p4"``, ``"p4m"`` or a :class:`~e4net.groups.Group`.
        padding: ``"same"`` (zero padding k // 2) or ``"valid"`` (no padding, as the alpha-p4-CNN). Both are exact.
        channel_attention: use the channel attention alpha_C.
        spatial_attention: use the spatial attention alpha_S.
        reduction: hidden width of the channel-attention MLP is ``max(1, C_in // reduction)``.
        attention_kernel_size: odd size of the spatial-attention convolution (7 in the paper).
        bias: add a learnable per-field output bias.

    Params ``C_out C_in |A| k^2`` (conv) + ``2 C_out C_in hidden |A|`` (alpha_C) + ``2 C_out |A| k_s^2`` (alpha_S).
    Memory: all ``C_out |A| C_in |A|`` contributions per pixel are materialised (quadratic in the neighbourhood).
    """

    over_group = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: str | Group,
        padding: str = "same",
        channel_attention: bool = True,
        spatial_attention: bool = True,
        reduction: int = 2,
        attention_kernel_size: int = 7,
        bias: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        self.in_channels = check_positive(in_channels, "in_channels", name)
        self.out_channels = check_positive(out_channels, "out_channels", name)
        self.padding, self.kernel_size = check_padding(padding, kernel_size, name)
        self.group = resolve(group)
        self.reduction = check_positive(reduction, "reduction", name)
        self.attention_kernel_size = check_kernel_size(attention_kernel_size, name)
        self.slots = 1 if self.lifting else self.group.order
        k, s = self.kernel_size, self.slots
        self.hidden_channels = max(1, in_channels // reduction)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, s, k, k))
        if channel_attention:
            self.fc1 = nn.Parameter(torch.empty(out_channels, self.hidden_channels, in_channels, s))
            self.fc2 = nn.Parameter(torch.empty(out_channels, in_channels, self.hidden_channels, s))
        else:
            self.fc1 = self.fc2 = None
        ks = self.attention_kernel_size
        self.spatial_weight = nn.Parameter(torch.empty(out_channels, 2, s, ks, ks)) if spatial_attention else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # Relative positions: the conv kernel on N(e), the channel MLP on the group part, alpha_S on its own window.
        self._register_relative_position_index()
        self._register_relative_position_index("relative_position_index_group", kernel_size=1)
        self._register_relative_position_index("relative_position_index_spatial", kernel_size=ks)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.slots * self.kernel_size**2
        bound = math.sqrt(6.0 / fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        for p in (self.fc1, self.fc2):
            if p is not None:
                fan = p.shape[2] * p.shape[3]
                nn.init.uniform_(p, -1.0 / math.sqrt(fan), 1.0 / math.sqrt(fan))
        if self.spatial_weight is not None:
            fan = 2 * self.slots * self.attention_kernel_size**2
            nn.init.uniform_(self.spatial_weight, -1.0 / math.sqrt(fan), 1.0 / math.sqrt(fan))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _check(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        check_input(x, self.in_channels, self.group, self.lifting, name)
        if self.padding == "valid":
            check_fits(x, self.kernel_size, name)

    def contributions(self, x: torch.Tensor) -> torch.Tensor:
        """The un-summed group convolution ``c (B, C_out, |A|, C_in, S, H', W')`` (S = 1 for lifting, else |A|)."""
        b_, k, n, s = x.shape[0], self.kernel_size, self.group.order, self.slots
        cout, cin = self.out_channels, self.in_channels
        bank = gather_relative(self.weight.reshape(cout, cin, -1), self.relative_position_index).view(
            cout, cin, n, s, k * k
        )
        pad = k // 2 if self.padding == "same" else 0
        cols = F.unfold(x.reshape(b_, cin * s, x.shape[-2], x.shape[-1]), k, padding=pad)  # (B, Cin S k k, H'W')
        ho, wo = x.shape[-2] + 2 * pad - k + 1, x.shape[-1] + 2 * pad - k + 1
        cols = cols.view(b_, cin * s, k * k, ho * wo).permute(1, 2, 0, 3).reshape(cin * s, k * k, -1)
        # one batched matmul over the (input field, input slot) pairs: (Cin S, C_out |A|, kk) @ (Cin S, kk, B H'W')
        y = torch.bmm(bank.permute(1, 3, 0, 2, 4).reshape(cin * s, cout * n, k * k), cols)
        return y.view(cin, s, cout, n, b_, ho, wo).permute(4, 2, 3, 0, 1, 5, 6)

    def channel_attention(self, c: torch.Tensor) -> torch.Tensor:
        """``alpha_C (B, C_out, |A|, C_in, S)`` from the spatial mean and max of the contributions."""
        fc1 = gather_relative(self.fc1, self.relative_position_index_group)  # (C_out, hidden, C_in, |A|, S)
        fc2 = gather_relative(self.fc2, self.relative_position_index_group)  # (C_out, C_in, hidden, |A|, S)

        def mlp(stat: torch.Tensor) -> torch.Tensor:
            hid = F.relu(torch.einsum("zoais,ojias->zoaj", stat, fc1))
            return torch.einsum("zoaj,oijas->zoais", hid, fc2)

        return torch.sigmoid(mlp(c.mean((-2, -1))) + mlp(c.amax((-2, -1))))

    def spatial_attention(self, c: torch.Tensor) -> torch.Tensor:
        """``alpha_S (B, C_out, |A|, H', W')`` from the mean and max over the input fields, a k_s x k_s conv."""
        b_, cout, n, _, s, hh, ww = c.shape
        ks = self.attention_kernel_size
        stats = torch.stack([c.mean(3), c.amax(3)], 3)  # (B, C_out, |A|, 2, S, H', W')
        spatial = self.relative_position_index_spatial
        bank = gather_relative(self.spatial_weight.reshape(cout, 2, -1), spatial)  # (C_out, 2, |A|, N)
        w = bank.transpose(1, 2).reshape(cout * n, 2 * s, ks, ks)
        y = F.conv2d(stats.reshape(b_, cout * n * 2 * s, hh, ww), w, None, 1, ks // 2, groups=cout * n)
        return torch.sigmoid(y.view(b_, cout, n, hh, ww))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        c = self.contributions(x)
        if self.fc1 is not None or self.spatial_weight is not None:
            att = c
            if self.fc1 is not None:
                att = att * self.channel_attention(c)[..., None, None]
            if self.spatial_weight is not None:
                att = att * self.spatial_attention(att)[:, :, :, None, None]
            c = c - att
        y = c.sum((3, 4))
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1, 1)
        return y

    def count_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """Contributions (a group conv), their modulated sum, the channel MLP (mean and max) and the 7 x 7 conv."""
        outs = output[0].numel()  # C_out |A| H' W'
        terms = self.in_channels * self.slots
        macs = outs * terms * self.kernel_size**2
        if self.fc1 is not None or self.spatial_weight is not None:
            macs += outs * terms
        if self.fc1 is not None:
            macs += 2 * self.out_channels * self.group.order * 2 * self.hidden_channels * terms
        if self.spatial_weight is not None:
            macs += outs * 2 * self.slots * self.attention_kernel_size**2
        return macs

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, group={self.group.name}, "
            f"padding={self.padding!r}, channel_attention={self.fc1 is not None}, "
            f"spatial_attention={self.spatial_weight is not None}, reduction={self.reduction}, "
            f"attention_kernel_size={self.attention_kernel_size}, bias={self.bias is not None}"
        )


class AttentiveLiftingConv(AttentiveGroupConv):
    """The lifting layer of :class:`AttentiveGroupConv`: images ``(B, C_in, H, W) -> (B, C_out, |A|, H', W')``.

    ``c[o, a, i](x) = sum_u W(a^-1 u) f_i(x + u)``; alpha_C is then the same MLP for every slot (no input group axis)
    and alpha_S's kernel lives on ``Omega`` (transformed by ``a``).
    """

    lifting = True
