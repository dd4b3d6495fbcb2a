"""Group self-attention (Eq. 6), after Romero & Cordonnier 2021 (ref. [24], "GSA-Nets"): an instance of Eq. 9.

:class:`GroupSelfAttention` / :class:`LiftingSelfAttention` are local multi-head self-attention on p4 / p4m feature
maps:

    f'(g) = sum_{g~ in N(g)} softmax_{g~}[ q(g)^T (k(g~) + P_{g^-1 g~}) / sqrt(d) ] v(g~)                    (Eq. 6)

with queries, keys and values from group-equivariant 1 x 1 maps (:class:`~e4net.nn.linear.SlotwiseLinear`; a plain
1 x 1 ``Conv2d`` in the lifting layer) and a relative positional encoding ``P`` indexed by ``g^-1 g~`` -- the
offset ``a^-1 (y - x)`` in the frame of ``g = (x, a)`` and, when ``over_group=True``, the relative group element
``a^-1 b``. ``P`` is a learnable tensor on ``N(e)`` gathered for every output slot with the group's relative-position
table (the buffer ``relative_position_index``, :meth:`e4net.groups.Group.relative_position_index`), so it rotates /
mirrors with the group element. The softmax runs over the k x k window (``over_group=False``: neighbours in the same
group slot) or over the window times the whole group axis (``over_group=True``, as in GSA-Nets). Neighbours outside
the image are masked out of the softmax (-inf), which keeps the layer exactly equivariant on square maps of any
size. ``query_slots="all"`` is the form the GSA-Nets code computes (every output slot sums the attention of all query
slots of its pixel, with the encoding indexed by the relative positions of query slot and key in the output slot's
frame).

The cost is quadratic in the neighbourhood: every output compares itself with every one of its ``|N(e)|``
neighbours. Each module's ``count_macs`` counts its own work only, the 1 x 1 projections count themselves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import Group, resolve
from ._checks import check_input, check_kernel_size, check_positive
from .aggregation import GroupAggregation, gather_relative
from .linear import SlotwiseLinear

__all__ = ["GroupSelfAttention", "LiftingSelfAttention", "POSITIONAL", "QUERY_SLOTS"]


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
        self._register_relative_position_index()
        if query_slots == "all":  # v^-1 g for the query slot g, and g^-1 m (group part of the factorized encoding)
            self._register_relative_position_index("relative_position_index_group", kernel_size=1)
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
            return gather_relative(pe, self.relative_position_index)
        return pe[:, self.relative_position_index_group[:, :, None], self.relative_position_index[:, None, :]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.group, self.lifting, type(self).__name__)
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
