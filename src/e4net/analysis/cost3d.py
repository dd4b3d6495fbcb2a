"""Sec. 4.2's cost comparison in 3-D: the E4 layer against the group convolution of the same width on O / Oh.

The closed forms of Sec. 4.2 with ``k^2 -> k^d`` (``d = 3`` on voxel grids), per output voxel, for ``c`` input and
output fields, ``|A|`` group elements, kernel side ``k``, reduction ``r`` and ``s`` slices:

* group convolution (Eq. 5): params ``c^2 k^d |A|``, MACs ``c^2 k^d |A|^2``;
* E4 layer (Eq. 12): params ``c^2 |A| (1 + 1/r) + c s k^d / r``, MACs ``(1 + 1/r) c^2 |A|^2 + (1 + s/r) k^d c |A|``.

:func:`cost_rows` puts them beside the live counts of :func:`e4net.count` on real layers
(:class:`~e4net.nn.GroupConv`, :class:`~e4net.nn.E4Conv`, a 1-voxel input so MACs are per voxel); the live E4
params also hold what the formula leaves out (the generator norm's ``2c/r`` affine parameters and ``W2``'s ``s k^d``
bias). ``python -m e4net.analysis.cost3d`` prints the markdown table of docs/3d.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..groups import get
from ..nn import E4Conv, GroupConv
from .count import count

__all__ = ["CostRow", "gconv_cost", "e4_cost", "cost_rows", "format_cost_table"]


def gconv_cost(c: int, order: int, k: int, dims: int = 3) -> tuple[int, int]:
    """``(params, MACs per voxel)`` of a group convolution, Sec. 4.2 with ``k^2 -> k^dims``."""
    kd = k**dims
    return c * c * kd * order, c * c * kd * order * order


def e4_cost(c: int, order: int, k: int, r: int = 1, s: int = 2, dims: int = 3) -> tuple[float, float]:
    """``(params, MACs per voxel)`` of an E4 layer, Sec. 4.2 with ``k^2 -> k^dims``."""
    kd = k**dims
    return c * c * order * (1 + 1 / r) + c * s * kd / r, (1 + 1 / r) * c * c * order * order + (
        1 + s / r
    ) * kd * c * order


@dataclass(frozen=True)
class CostRow:
    """One configuration: the formulas and the live counts of both layers (MACs per output voxel)."""

    group: str
    order: int
    k: int
    c: int
    r: int
    s: int
    gconv_params: int
    gconv_macs: int
    gconv_params_formula: int
    gconv_macs_formula: int
    e4_params: int
    e4_macs: int
    e4_params_formula: float
    e4_macs_formula: float

    @property
    def mac_ratio(self) -> float:
        """Group-convolution MACs over E4 MACs (live counts)."""
        return self.gconv_macs / self.e4_macs

    @property
    def param_ratio(self) -> float:
        return self.gconv_params / self.e4_params


def cost_rows(
    c: int = 8, groups: tuple[str, ...] = ("O", "Oh"), kernel_sizes: tuple[int, ...] = (3, 5), r: int = 1, s: int = 2
) -> list[CostRow]:
    """Live counts and closed forms for every group and kernel size at width ``c`` (the defaults: docs/3d.md)."""
    rows = []
    for name in groups:
        group = get(name)
        n, dims = group.order, group.spatial_dims
        shape = (c, n) + (1,) * dims  # one voxel: MACs per voxel
        for k in kernel_sizes:
            g = count(GroupConv(c, c, k, group), shape)
            e = count(E4Conv(c, c, k, group, reduction=r, slices=s), shape)
            gp, gm = gconv_cost(c, n, k, dims)
            ep, em = e4_cost(c, n, k, r, s, dims)
            rows.append(CostRow(name, n, k, c, r, s, g.params, g.macs, gp, gm, e.params, e.macs, ep, em))
    return rows


def format_cost_table(rows: list[CostRow]) -> str:
    """The markdown table of docs/3d.md: live counts with the closed form in parentheses where they differ."""

    def both(live: float, formula: float) -> str:
        return f"{live:,}" if live == formula else f"{live:,} ({formula:,.0f})"

    lines = [
        "| group | \\|A\\| | k | c | GroupConv params | GroupConv MACs/voxel | E4 params (formula) | E4 MACs/voxel | "
        "MACs ratio | params ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in rows:
        lines.append(
            f"| {x.group} | {x.order} | {x.k} | {x.c} | {both(x.gconv_params, x.gconv_params_formula)} | "
            f"{both(x.gconv_macs, x.gconv_macs_formula)} | {both(x.e4_params, x.e4_params_formula)} | "
            f"{both(x.e4_macs, x.e4_macs_formula)} | {x.mac_ratio:.1f}x | {x.param_ratio:.1f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - the command of docs/3d.md
    import argparse

    parser = argparse.ArgumentParser(description="Sec. 4.2's cost table in 3-D (E4 vs group convolution on O / Oh)")
    parser.add_argument("--width", type=int, default=8, help="fields c (input = output)")
    parser.add_argument("--reduction", type=int, default=1)
    parser.add_argument("--slices", type=int, default=2)
    args = parser.parse_args()
    print(format_cost_table(cost_rows(args.width, r=args.reduction, s=args.slices)))
