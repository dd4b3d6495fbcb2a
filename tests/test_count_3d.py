"""e4net.count on the 3-D layers: live counts equal Sec. 4.2's closed forms with k^2 -> k^3 (analysis.cost3d)."""

from __future__ import annotations

import pytest
import torch

import e4net
from e4net import nn as enn
from e4net.analysis.cost3d import cost_rows, e4_cost, format_cost_table, gconv_cost
from e4net.groups import OH, O


@pytest.mark.parametrize("G", [O, OH], ids=str)
def test_3d_layers_count_like_the_formulas(G):
    n, c, k, r, s = G.order, 4, 3, 2, 2
    grid = (3, 4, 2)
    voxels = 3 * 4 * 2
    g = e4net.count(enn.GroupConv(c, c, k, G), (c, n, *grid))
    params, macs = gconv_cost(c, n, k)
    assert (g.params, g.macs) == (params, macs * voxels)
    e = e4net.count(enn.E4Conv(c, c, k, G, reduction=r, slices=s), (c, n, *grid))
    params, macs = e4_cost(c, n, k, r, s)
    assert e.macs == macs * voxels
    assert e.params == params + 2 * (c // r) + s * k**3  # + the generator norm's affine and W2's bias
    lift = e4net.count(enn.LiftingConv(1, c, k, G), (1, *grid))
    assert (lift.params, lift.macs) == (c * k**3, c * n * k**3 * voxels)


def test_plain_conv3d_is_counted():
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(3 * 8, 5))
    cnt = e4net.count(model, (2, 2, 2, 2))
    assert cnt.macs == 3 * 8 * 2 * 27 + 5 * 24


def test_cost_table_rows():
    rows = cost_rows(c=8, kernel_sizes=(3,))
    assert [(x.group, x.order, x.k) for x in rows] == [("O", 24, 3), ("Oh", 48, 3)]
    assert rows[0].gconv_macs == 8 * 8 * 27 * 24 * 24 and rows[0].e4_macs == 2 * 64 * 576 + 3 * 27 * 8 * 24
    assert 11 < rows[0].mac_ratio < 11.2  # the "about 11x" at |A| = 24, k = 3, r = 1, s = 2, c = 8
    assert format_cost_table(rows).count("\n") == 3
