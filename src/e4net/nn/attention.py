"""Attention instances of the aggregation framework (Eq. 9): group self-attention (Eq. 6) and attentive group conv.

* :class:`GroupSelfAttention` / :class:`LiftingSelfAttention` -- local multi-head self-attention on p4 / p4m
  feature maps after Romero & Cordonnier 2021 (ref. [24], "GSA-Nets"), Eq. 6 of the paper:

      f'(g) = sum_{g~ in N(g)} softmax_{g~}[ q(g)^T (k(g~) + P_{g^-1 g~}) / sqrt(d) ] v(g~)

  with queries, keys and values from group-equivariant 1 x 1 maps (:class:`~e4net.nn.e4.SlotwiseLinear`; a plain
  1 x 1 ``Conv2d`` in the lifting layer) and a relative positional encoding ``P`` indexed by ``g^-1 g~`` -- the
  offset ``a^-1 (y - x)`` in the frame of ``g = (x, a)`` and, when ``over_group=True``, the relative group element
  ``a^-1 b``. ``P`` is a learnable tensor on ``N(e)`` gathered for every output slot with the relative-position table
  of :class:`~e4net.nn.aggregation.GroupAggregation` (so it rotates / mirrors with the group element). The softmax
  runs over the k x k window (``over_group=False``: neighbours in the same group slot) or over the window times
  the whole group axis (``over_group=True``, as in GSA-Nets). Neighbours outside the image are masked out of the
  softmax (-inf), which keeps the layer exactly equivariant on square maps of any size. ``query_slots="all"`` is
  the form the GSA-Nets code computes (every output slot sums the attention of all query slots of its pixel, with
  the encoding indexed by the relative positions of query slot and key in the output slot's frame).
* :class:`AttentiveGroupConv` / :class:`AttentiveLiftingConv` -- the attentive group convolution after Romero et al.
  2020 (ref. [23], "Attentive group equivariant convolutional networks", the alpha-p4-CNN layer): every
  contribution ``c[o, a, i, b](x) = sum_u W(a^-1 u, a^-1 b) f_i(x + u, b)`` of the group convolution (Eq. 5) is
  modulated before it is summed,

      f'_o(x, a) = sum_{i, b} c[o, a, i, b](x) (1 - alpha_C[o, a, i, b] alpha_S[o, a](x)),

  by a channel attention ``alpha_C`` (a two-layer MLP per output field on the spatial mean and max of the
  contributions, weights indexed by the relative group element ``a^-1 b``) and a spatial attention ``alpha_S``
  (a 7 x 7 convolution over the mean and max along the input fields, kernel on ``Omega x A`` indexed by
  ``g^-1 g~``). All relative-position-indexed weights go through the same table, so the attention maps are
  computed equivariantly.

Both cost quadratically in the neighbourhood: every output compares itself with every one of its ``|N(e)|``
neighbours (self-attention), or every contribution of the group convolution is materialised (attentive conv).
Each module's ``count_macs`` counts its own work only, the 1 x 1 projections count themselves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, resolve
from ._checks import check_feature_map, check_image, check_kernel_size, check_positive
from .aggregation import GroupAggregation, gather_relative
from .e4 import SlotwiseLinear

__all__ = ["GroupSelfAttention", "LiftingSelfAttention", "AttentiveGroupConv", "AttentiveLiftingConv", "POSITIONAL"]

POSITIONAL = ("factorized", "full")
QUERY_SLOTS = ("own", "all")


def _valid_mask(h: int, w: int, k: int, device: torch.device) -> torch.Tensor:
    """``(k*k, h*w)`` bool: which window positions of each pixel lie inside the image."""
    ones = torch.ones(1, 1, h, w, device=device)
    return F.unfold(ones, k, padding=k // 2)[0] > 0.5


class _SelfAttention(GroupAggregation):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: str | Group,
        heads: int,
        head_channels: int | None,
        over_group: bool,
        positional: str,
        query_slots: str = "own",
    ):
        super().__init__()
        name = type(self).__name__
        self.in_channels = check_positive(in_channels, "in_channels", name)
        self.out_channels = check_positive(out_channels, "out_channels", name)
        self.kernel_size = check_kernel_size(kernel_size, name)
        self.group = resolve(group)
        self.heads = check_positive(heads, "heads", name)
        d = max(1, out_channels // 2) if head_channels is None else head_channels
        self.head_channels = check_positive(d, "head_channels", name)
        if positional not in POSITIONAL:
            raise ValueError(f"{name}: positional must be one of {POSITIONAL}, got {positional!r}")
        self.positional = positional
        if not isinstance(over_group, bool):
            raise ValueError(f"{name}: over_group must be a bool, got {over_group!r}")
        self.over_group = over_group and not self.lifting
        if query_slots not in QUERY_SLOTS:
            raise ValueError(f"{name}: query_slots must be one of {QUERY_SLOTS}, got {query_slots!r}")
        if query_slots == "all" and not self.over_group:
            raise ValueError(f"{name}: query_slots='all' needs group input with over_group=True")
        self.query_slots = query_slots
        k = kernel_size
        self.slots = self.group.order if self.over_group else 1  # group part of N(e)
        hd = self.heads * d
        if self.lifting:
            self.query, self.key, self.value = (nn.Conv2d(in_channels, hd, 1) for _ in range(3))
        else:
            self.query, self.key, self.value = (SlotwiseLinear(in_channels, hd, bias=True) for _ in range(3))
        self.out = SlotwiseLinear(hd, out_channels, bias=True)
        # Relative positional encoding P on N(e) (shared by the heads, as in GSA-Nets).
        # With query_slots="all" it is indexed by the query slot too: P(v^-1 g, v^-1 m, v^-1 u) for output slot v.
        qs = (self.group.order,) if query_slots == "all" else ()
        if positional == "full":
            self.pos = nn.Parameter(torch.empty(d, *qs, self.slots, k, k))
        else:  # row / column (/ group) embeddings, summed into one tensor on N(e)
            dr = d // 3 if self.slots > 1 else d // 2
            dc = dr if self.slots > 1 else d - dr
            dg = d - dr - dc
            self.pos_row = nn.Parameter(torch.empty(dr, k))
            self.pos_col = nn.Parameter(torch.empty(dc, k))
            self.pos_group = nn.Parameter(torch.empty(dg, self.slots)) if dg else None
        self.register_buffer("rel_index", self.relative_index(), persistent=False)
        if query_slots == "all":  # v^-1 g for the query slot g, and g^-1 m (group part of the factorized encoding)
            self.register_buffer("rel_index_query", self.relative_index(kernel_size=1), persistent=False)
            between = [self.group.regular_permutation(g) for g in self.group.elements()]
            self.register_buffer("slot_between", torch.tensor(between), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.query, self.key, self.value, self.out):
            m.reset_parameters()
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)
        std = 1.0 / math.sqrt(self.head_channels)
        for p in (getattr(self, n, None) for n in ("pos", "pos_row", "pos_col", "pos_group")):
            if isinstance(p, nn.Parameter):
                nn.init.normal_(p, 0.0, std)

    def positional_encoding(self) -> torch.Tensor:
        """``P`` on ``N(e)``: ``(d, |N(e)|)``, index ``(b, u)`` b-major (the layout of the relative-position table).

        With ``query_slots="all"``: ``(d, |A|, |N(e)|)``, first indexed by the query slot ``g`` (the group part of the
        factorized encoding is then a function of ``g^-1 m``, as in the GSA-Nets code).
        """
        k, s, d = self.kernel_size, self.slots, self.head_channels
        if self.positional == "full":
            return self.pos.reshape(d, -1) if self.query_slots == "own" else self.pos.reshape(d, s, -1)
        if self.query_slots == "all":
            parts = [
                self.pos_row[:, None, None, :, None].expand(-1, s, s, k, k),
                self.pos_col[:, None, None, None, :].expand(-1, s, s, k, k),
            ]
            if self.pos_group is not None:  # (dg, g, m) = pos_group[:, g^-1 m]
                parts.append(self.pos_group[:, self.slot_between][..., None, None].expand(-1, s, s, k, k))
            return torch.cat(parts, 0).reshape(d, s, -1)
        parts = [
            self.pos_row[:, None, :, None].expand(-1, s, k, k),
            self.pos_col[:, None, None, :].expand(-1, s, k, k),
        ]
        if self.pos_group is not None:
            parts.append(self.pos_group[:, :, None, None].expand(-1, s, k, k))
        return torch.cat(parts, 0).reshape(d, -1)

    def relative_encoding(self) -> torch.Tensor:
        """``P`` as seen by every output slot ``a``, via the relative-position tables: ``(d, |A|, |N(e)|)``, or
        ``(d, |A|, |A|, |N(e)|)`` (output slot, query slot, neighbour) with ``query_slots="all"``."""
        pe = self.positional_encoding()
        if self.query_slots == "own":
            return gather_relative(pe, self.rel_index)
        return pe[:, self.rel_index_query[:, :, None], self.rel_index[:, None, :]]

    def _check(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if self.lifting:
            check_image(x, self.in_channels, name)
        else:
            check_feature_map(x, self.in_channels, self.group, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        b_, hh, ww = x.shape[0], x.shape[-2], x.shape[-1]
        n, k, h, d = self.group.order, self.kernel_size, self.heads, self.head_channels
        kk, p = k * k, hh * ww
        s_in = 1 if self.lifting else n  # input slots
        # Layout: (batch, head, pixel, ...) so that every product below is one batched matmul.

        def unfold(t: torch.Tensor) -> torch.Tensor:  # (B, h d, [S,] H, W) -> (B, h, H W, d, S, k*k)
            cols = F.unfold(t.reshape(b_, h * d * s_in, hh, ww), k, padding=k // 2)
            return cols.view(b_, h, d, s_in, kk, p).permute(0, 1, 5, 2, 3, 4)

        keys, values = unfold(self.key(x)), unfold(self.value(x))
        rel = self.relative_encoding()  # (d, |A|, |N(e)|): T_a P
        if self.lifting:  # one image-level query for every output slot
            q = self.query(x).view(b_, h, d, 1, p).permute(0, 1, 4, 3, 2)  # (B, h, HW, 1, d)
            pos = torch.einsum("bhpd,dan->bhpan", q.squeeze(3), rel)  # q.P_{g^-1 g~}, (B, h, HW, |A|, |N(e)|)
        else:
            q = self.query(x).view(b_, h, d, n, p).permute(0, 1, 4, 3, 2)  # (B, h, HW, |A|, d)
            if self.query_slots == "all":
                pos = torch.einsum("bhpgd,dvgn->bhpvgn", q, rel)  # (B, h, HW, |A| out, |A| query, |N(e)|)
            else:
                pos = torch.einsum("bhpad,dan->bhpan", q, rel)
        if self.lifting or self.over_group:  # neighbours (b, u): every input slot of the k x k window
            keys, values = keys.flatten(-2), values.flatten(-2).transpose(-1, -2)  # (.., d, N), (.., N, d)
            content = q @ keys
            scores = ((content.unsqueeze(3) if self.query_slots == "all" else content) + pos) * (1.0 / math.sqrt(d))
        else:  # neighbours (a, u): the query's own slot (relative group element e)
            keys, values = keys.transpose(3, 4), values.permute(0, 1, 2, 4, 5, 3)  # (.., |A|, d, kk), (.., |A|, kk, d)
            scores = ((q.unsqueeze(-2) @ keys).squeeze(-2) + pos) * (1.0 / math.sqrt(d))
        valid = _valid_mask(hh, ww, k, x.device).t().repeat(1, scores.shape[-1] // kk)  # (HW, |N(e)|)
        attn = torch.softmax(scores.masked_fill(~valid.view(hh * ww, *[1] * (scores.dim() - 4), -1), float("-inf")), -1)
        if self.query_slots == "all":  # output slot v sums the attention of every query slot g of its pixel
            attn = attn.sum(4)
        if self.lifting or self.over_group:
            y = attn @ values  # (B, h, HW, |A|, d)
        else:
            y = (attn.unsqueeze(-2) @ values).squeeze(-2)
        return self.out(y.permute(0, 1, 4, 3, 2).reshape(b_, h * d, n, hh, ww))

    def count_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """Attention only: ``H W heads |N(e)| d (|A| + |A| + |A|)`` -- q.k, q.P and the weighted sum of the values.

        The lifting layer computes q.k once per pixel (its query does not depend on the slot): ``(1 + 2 |A|)``.
        Masked (outside-the-image) neighbours are counted: they are computed. The q / k / v / output 1 x 1 maps
        count themselves.
        """
        n = self.group.order
        per_slot = output.shape[-2] * output.shape[-1] * self.heads * self.neighbourhood_size() * self.head_channels
        if self.query_slots == "all":  # q.k per query slot, q.P per (output, query) slot pair, weights.v per output
            return per_slot * (n + n * n + n)
        return per_slot * ((1 if self.lifting else n) + 2 * n)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, group={self.group.name}, "
            f"heads={self.heads}, head_channels={self.head_channels}, over_group={self.over_group}, "
            f"positional={self.positional!r}, query_slots={self.query_slots!r}"
        )


class GroupSelfAttention(_SelfAttention):
    """Local multi-head group self-attention (Eq. 6) on ``(B, C_in, |A|, H, W) -> (B, C_out, |A|, H, W)``.

    Args:
        in_channels, out_channels: numbers of fields.
        kernel_size: odd spatial extent k of the window ``Omega``.
        group: ``"p4"``, ``"p4m"`` or a :class:`~e4net.groups.Group`.
        heads: number of attention heads.
        head_channels: query / key / value width d per head (default ``out_channels // 2``, as GSA-Nets).
        over_group: softmax over ``Omega x A`` (all group slots of the window, GSA-Nets) if True, else over ``Omega``
            in the query's own slot.
        positional: ``"factorized"`` (row, column and group embeddings of sizes d/3 each, as GSA-Nets) or
            ``"full"`` (one learnable vector per relative position).
        query_slots: ``"own"`` -- Eq. 6 as written (and as in the GSA-Nets paper): the query of output ``(x, a)`` is
            ``f(x, a)``. ``"all"`` -- as the GSA-Nets *code*: output slot ``v`` sums, over every query slot ``g`` of its
            pixel, a softmax-weighted aggregation with scores ``q(x, g)^T (k(y, m) + P(v^-1 g, v^-1 m, v^-1 (y - x)))``
            (``|A|`` times the query-key pairs; this is what Table 1's 400M MACs for p4-SA count, see
            docs/attention.md). Needs ``over_group=True``.

    Params ``3 (C_in + 1) heads d + (heads d + 1) C_out`` + the encoding; MACs (own) ``3 |A| H W heads |N(e)| d``
    (``(2 + |A|) |A| H W heads |N(e)| d`` with ``query_slots="all"``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: str | Group,
        heads: int = 9,
        head_channels: int | None = None,
        over_group: bool = True,
        positional: str = "factorized",
        query_slots: str = "own",
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, group, heads, head_channels, over_group, positional, query_slots
        )


class LiftingSelfAttention(_SelfAttention):
    """Lifting self-attention: images ``(B, C_in, H, W) -> (B, C_out, |A|, H, W)``.

    Output slot ``a`` attends over the k x k window with the positional encoding transformed by ``a``:
    ``f'(x, a) = sum_u softmax_u[q(x)^T (k(x + u) + P(a^-1 u))] v(x + u)``. Arguments as :class:`GroupSelfAttention`
    (no ``over_group``: the input has no group axis).
    """

    lifting = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: str | Group,
        heads: int = 9,
        head_channels: int | None = None,
        positional: str = "factorized",
    ):
        super().__init__(in_channels, out_channels, kernel_size, group, heads, head_channels, False, positional)


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
        if padding not in ("same", "valid"):
            raise ValueError(f"{name}: padding must be 'same' or 'valid', got {padding!r}")
        self.padding = padding
        if padding == "same":
            self.kernel_size = check_kernel_size(kernel_size, name)
        else:
            self.kernel_size = check_positive(kernel_size, "kernel_size", name)
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
        self.register_buffer("rel_index", self.relative_index(), persistent=False)
        self.register_buffer("rel_index_group", self.relative_index(kernel_size=1), persistent=False)
        self.register_buffer("rel_index_spatial", self.relative_index(kernel_size=ks), persistent=False)
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
        if self.lifting:
            check_image(x, self.in_channels, name)
        else:
            check_feature_map(x, self.in_channels, self.group, name)
        if self.padding == "valid" and (x.shape[-2] < self.kernel_size or x.shape[-1] < self.kernel_size):
            raise ValueError(
                f"{name}: a {x.shape[-2]}x{x.shape[-1]} map is smaller than the {self.kernel_size}x{self.kernel_size} "
                f"kernel of a 'valid' convolution"
            )

    def contributions(self, x: torch.Tensor) -> torch.Tensor:
        """The un-summed group convolution ``c (B, C_out, |A|, C_in, S, H', W')`` (S = 1 for lifting, else |A|)."""
        b_, k, n, s = x.shape[0], self.kernel_size, self.group.order, self.slots
        cout, cin = self.out_channels, self.in_channels
        bank = gather_relative(self.weight.reshape(cout, cin, -1), self.rel_index).view(cout, cin, n, s, k * k)
        pad = k // 2 if self.padding == "same" else 0
        cols = F.unfold(x.reshape(b_, cin * s, x.shape[-2], x.shape[-1]), k, padding=pad)  # (B, Cin S k k, H'W')
        ho, wo = x.shape[-2] + 2 * pad - k + 1, x.shape[-1] + 2 * pad - k + 1
        cols = cols.view(b_, cin * s, k * k, ho * wo).permute(1, 2, 0, 3).reshape(cin * s, k * k, -1)
        # one batched matmul over the (input field, input slot) pairs: (Cin S, C_out |A|, kk) @ (Cin S, kk, B H'W')
        y = torch.bmm(bank.permute(1, 3, 0, 2, 4).reshape(cin * s, cout * n, k * k), cols)
        return y.view(cin, s, cout, n, b_, ho, wo).permute(4, 2, 3, 0, 1, 5, 6)

    def channel_attention(self, c: torch.Tensor) -> torch.Tensor:
        """``alpha_C (B, C_out, |A|, C_in, S)`` from the spatial mean and max of the contributions."""
        fc1 = gather_relative(self.fc1, self.rel_index_group)  # (C_out, hidden, C_in, |A|, S)
        fc2 = gather_relative(self.fc2, self.rel_index_group)  # (C_out, C_in, hidden, |A|, S)

        def mlp(stat: torch.Tensor) -> torch.Tensor:
            hid = F.relu(torch.einsum("zoais,ojias->zoaj", stat, fc1))
            return torch.einsum("zoaj,oijas->zoais", hid, fc2)

        return torch.sigmoid(mlp(c.mean((-2, -1))) + mlp(c.amax((-2, -1))))

    def spatial_attention(self, c: torch.Tensor) -> torch.Tensor:
        """``alpha_S (B, C_out, |A|, H', W')`` from the mean and max over the input fields, a k_s x k_s conv."""
        b_, cout, n, _, s, hh, ww = c.shape
        ks = self.attention_kernel_size
        stats = torch.stack([c.mean(3), c.amax(3)], 3)  # (B, C_out, |A|, 2, S, H', W')
        bank = gather_relative(self.spatial_weight.reshape(cout, 2, -1), self.rel_index_spatial)  # (C_out, 2, |A|, N)
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
