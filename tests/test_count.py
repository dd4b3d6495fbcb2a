"""e4net.count against the paper's formulas (Sec. 4.2) and the standard ones."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import e4net
from e4net import nn as enn
from e4net.groups import P4, P4M


def test_issue_example_e4conv_p4_16_fields():
    layer = enn.E4Conv(16, 16, 5, "p4", reduction=1, slices=2)
    c = e4net.count(layer, (16, 4, 28, 28))
    assert c.macs == 10_185_728  # (1 + 1/r) c^2 |A|^2 hw + (1 + s/r) k^2 c |A| hw
    weights = sum(p.numel() for n, p in layer.named_parameters() if n.endswith("weight") and not n.startswith("norm"))
    assert weights == 2_848  # c^2 |A| (1 + 1/r) + c s k^2 / r
    assert c.params == 2_848 + 2 * 16 + 2 * 25  # + the norm's affine (2c/r) + the generator's bias (s k^2)


@given(
    gi=st.sampled_from([0, 1]),
    c_over_r=st.integers(1, 6),
    r=st.sampled_from([1, 2, 4]),
    s=st.sampled_from([1, 2, 4]),
    k=st.sampled_from([1, 3, 5, 7]),
    hw=st.integers(3, 9),
    concat=st.sampled_from(["both", "kernel", "value", "none"]),
)
def test_e4conv_matches_section_4_2(gi, c_over_r, r, s, k, hw, concat):
    G = [P4, P4M][gi]
    c = c_over_r * r * s  # divisible by r and s
    n = G.order
    layer = enn.E4Conv(c, c, k, G, reduction=r, slices=s, concat=concat)
    cnt = e4net.count(layer, (c, n, hw, hw))
    nv = n if concat in ("both", "value") else 1  # concatenation along A multiplies V's input by |A|
    nk = n if concat in ("both", "kernel") else 1
    params = c * c * nv + c * c * nk // r + c * s * k * k // r + 2 * c // r + s * k * k
    macs = (c * c * nv + c * c * nk // r) * n * hw * hw + (1 + s / r) * k * k * c * n * hw * hw
    assert cnt.params == params
    assert cnt.macs == macs
    if concat == "both":
        assert cnt.macs == (1 + 1 / r) * c * c * n * n * hw * hw + (1 + s / r) * k * k * c * n * hw * hw


@pytest.mark.parametrize("G", [P4, P4M], ids=str)
def test_group_and_lifting_conv(G):
    n, c, k, hw = G.order, 6, 3, 10
    gc = enn.GroupConv(c, c, k, G)
    cnt = e4net.count(gc, (c, n, hw, hw))
    assert cnt.macs == c * c * k * k * n * n * hw * hw and cnt.params == c * c * k * k * n
    lc = enn.LiftingConv(3, c, 5, G, bias=True)
    cnt = e4net.count(lc, (3, hw, hw))
    assert cnt.macs == c * n * 3 * 25 * hw * hw and cnt.params == c * 3 * 25 + c
    strided = e4net.count(enn.GroupConv(c, c, k, G, stride=2), (c, n, 9, 9))
    assert strided.macs == c * c * k * k * n * n * 5 * 5


def test_linear_conv2d_and_stack():
    model = torch.nn.Sequential(
        enn.LiftingConv(1, 4, 3, "p4"),
        enn.GroupBatchNorm(4, "p4"),
        enn.E4Conv(4, 4, 3, "p4", slices=2, stride=2),
        enn.GroupMaxPool(),
        torch.nn.Conv2d(4, 8, 3, padding=1),
        enn.GlobalMaxPool(),
        torch.nn.Linear(8, 10),
    )
    model.train()
    cnt = e4net.count(model, (1, 9, 9))
    assert model.training  # restored
    lift = 4 * 4 * 9 * 81
    e4 = enn.E4Conv(4, 4, 3, "p4", slices=2, stride=2)
    e4_in = e4net.count(e4, (4, 4, 9, 9)).macs
    assert cnt.macs == lift + e4_in + 8 * 4 * 9 * 25 + 80
    assert cnt.params == sum(p.numel() for p in model.parameters())
    assert set(cnt.by_module) >= {"0", "2", "2.value", "4", "6"}


def test_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        e4net.count(enn.GroupConv(2, 2, 3, "p4"), ())
    with pytest.raises(ValueError, match="fields"):
        e4net.count(enn.GroupConv(2, 2, 3, "p4"), (3, 4, 8, 8))
