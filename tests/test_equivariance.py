"""Exact equivariance of every core layer: f(T_g x) = T'_g f(x) for all elements of p4 and p4m.

Parameters and buffers are randomized (``randomize_``), so the property is checked for weights that training
can reach, not only at init. The planted-bug tests at the end show that these checks fail on a wrong rotation.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e4net import nn as enn
from e4net.analysis import equivariance_error, max_equivariance_error, randomize_
from e4net.groups import P4, P4M, Group

GROUPS = [P4, P4M]
TOL = 1e-5  # relative, float32


def _layer_and_input(kind: str, G: Group, cin: int, cout: int, k: int, h: int, w: int, stride: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    if kind.startswith("lifting"):
        padding = "valid" if kind == "lifting-valid" else "same"
        layer = enn.LiftingConv(cin, cout, k, G, stride=stride, bias=True, padding=padding)
        x = torch.randn(2, cin, h, w, generator=gen)
    else:
        x = torch.randn(2, cin, G.order, h, w, generator=gen)
        if kind.startswith("gconv"):
            padding = "valid" if kind == "gconv-valid" else "same"
            layer = enn.GroupConv(cin, cout, k, G, stride=stride, bias=True, padding=padding)
        elif kind == "e4":
            slices = [s for s in (1, 2, 3) if cout % s == 0][-1]
            layer = enn.E4Conv(cin, cout, k, G, reduction=1 + seed % 2, slices=slices, stride=stride, bias=True)
        elif kind == "e4-batch":
            layer = enn.E4Conv(cin, cout, k, G, slices=1, stride=stride, generator_norm="batch")
        elif kind.startswith("e4-"):
            layer = enn.E4Conv(cin, cout, k, G, slices=1, stride=stride, concat=kind[3:])
        elif kind == "bn":
            layer = enn.GroupBatchNorm(cin, G)
        elif kind == "in":
            layer = enn.GroupInstanceNorm(cin, G)
        elif kind == "slotwise":
            layer = enn.SlotwiseLinear(cin, cout, bias=True)
        else:
            raise AssertionError(kind)
    randomize_(layer, seed, scale=0.5)
    return layer, x


LAYERS = [
    "lifting",
    "gconv",
    "lifting-valid",
    "gconv-valid",
    "e4",
    "e4-none",
    "e4-kernel",
    "e4-value",
    "e4-batch",
    "bn",
    "in",
    "slotwise",
]


@settings(max_examples=80)
@given(
    kind=st.sampled_from(LAYERS),
    gi=st.sampled_from([0, 1]),
    cin=st.integers(1, 4),
    cout=st.integers(1, 6),
    k=st.sampled_from([1, 3, 5]),
    h=st.integers(3, 10),
    w=st.integers(3, 10),
    stride=st.sampled_from([1, 2]),
    train=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_layer_equivariance(kind, gi, cin, cout, k, h, w, stride, train, seed):
    G = GROUPS[gi]
    if stride == 2 and kind in ("bn", "in", "slotwise"):
        stride = 1
    if kind.endswith("-valid"):  # unpadded: any k (even too), on maps at least as large as the kernel
        k += seed % 2
        h, w = max(h, k), max(w, k)
        if stride == 2:  # exact (and accepted) when the grid of kernel centres has odd size
            h, w = h + (h - k) % 2, w + (w - k) % 2
    elif stride == 2:  # strided layers are exact (and accepted) only on odd sizes
        h, w = h | 1, w | 1
    layer, x = _layer_and_input(kind, G, cin, cout, k, h, w, stride, seed)
    layer.train(train)
    # In train mode BN normalises with batch statistics over (B, |A|, H, W): invariant, hence still exact.
    for g in G.elements():
        err = equivariance_error(layer, x, G, g)
        assert err < TOL, f"{kind} {G.name} g={G.element_name(g)} h={h} w={w} stride={stride}: rel err {err:.2e}"


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("backend", ["reference", "shift"])
def test_e4_equivariance_per_backend(G, backend):
    layer = randomize_(enn.E4Conv(4, 6, 5, G, slices=2, backend=backend), 3, 0.5)
    x = torch.randn(2, 4, G.order, 8, 7)
    assert max_equivariance_error(layer, x, G) < TOL


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("size", [(12, 12), (11, 13)])
def test_stack_is_invariant(G, size):
    """LiftingConv -> E4Conv -> GroupConv -> GroupMaxPool -> global pooling is invariant to every element."""
    model = torch.nn.Sequential(
        enn.LiftingConv(3, 6, 5, G),
        enn.GroupBatchNorm(6, G),
        torch.nn.ReLU(),
        enn.E4Conv(6, 6, 3, G, slices=3),
        torch.nn.ReLU(),
        enn.GroupConv(6, 5, 3, G),
        enn.GroupMaxPool(),
        enn.GlobalAvgPool(),
    )
    randomize_(model, 7, 0.5).eval()
    x = torch.randn(3, 3, *size)
    for g in G.elements():
        assert equivariance_error(model, x, G, g) < TOL


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_spatial_pooling_equivariance(G):
    x = torch.randn(2, 3, G.order, 8, 12)
    for pool in (enn.SpatialMaxPool2d(2), enn.SpatialAvgPool2d(2), enn.SpatialMaxPool2d(4)):
        assert max_equivariance_error(pool, x, G) < TOL
    assert max_equivariance_error(enn.GroupMaxPool(), x, G) < TOL  # invariant in the group axis: maps to images


# ---- planted bugs: the checks above must catch a wrong rotation -----------------------------------------------


def _wrong_way(G: Group):
    """An action that rotates the wrong way (r^-1 instead of r)."""
    right = G.act_on_signal

    def act_on_signal(x, g):
        i, j = G.decompose(g)
        return right(x, G.element(-i, j))

    return act_on_signal


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("kind", ["lifting", "gconv", "e4"])
def test_planted_wrong_kernel_rotation_is_caught(G, kind, monkeypatch):
    layer, x = _layer_and_input(kind, G, 3, 4, 3, 7, 7, 1, seed=1)
    layer.eval()
    assert max_equivariance_error(layer, x, G) < TOL
    wrong = _wrong_way(G)
    if kind == "lifting":
        monkeypatch.setattr(
            layer,
            "filter_bank",
            lambda: torch.stack([wrong(layer.weight, a) for a in G.elements()], 1).reshape(-1, 3, 3, 3),
        )
    elif kind == "gconv":

        def bank():
            perm = [torch.tensor(G.regular_permutation(a)) for a in G.elements()]
            b = torch.stack([wrong(layer.weight, a).index_select(-3, perm[a]) for a in G.elements()], 1)
            return b.reshape(4 * G.order, 3 * G.order, 3, 3)

        monkeypatch.setattr(layer, "filter_bank", bank)
    else:
        grid = torch.arange(9).view(3, 3)
        layer.relative_position_index = torch.stack([wrong(grid, a).reshape(-1) for a in G.elements()])
    assert max_equivariance_error(layer, x, G) > 1e-3


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_planted_missing_group_permutation_is_caught(G, monkeypatch):
    """A group convolution that rotates its kernels but forgets to permute their group axis is not equivariant."""
    layer, x = _layer_and_input("gconv", G, 2, 3, 3, 7, 7, 1, seed=2)
    layer.eval()
    bank = torch.stack([G.act_on_signal(layer.weight, a) for a in G.elements()], 1).reshape(
        3 * G.order, 2 * G.order, 3, 3
    )
    monkeypatch.setattr(layer, "filter_bank", lambda: bank)
    assert max_equivariance_error(layer, x, G) > 1e-3


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_planted_per_slot_norm_affine_is_caught(G):
    """A norm whose affine weight differs along the group axis is equivariant at init and broken once trained."""

    class SlotNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1, 3, G.order, 1, 1))

        def forward(self, x):
            return x * self.weight

    norm, x = SlotNorm(), torch.randn(2, 3, G.order, 5, 5)
    assert max_equivariance_error(norm, x, G) < TOL  # at init
    randomize_(norm, 0)
    assert max_equivariance_error(norm, x, G) > 1e-3  # after "training"
    # ours shares the affine weight over the group axis, so randomizing it keeps equivariance
    ours = randomize_(enn.GroupBatchNorm(3, G), 0).eval()
    assert max_equivariance_error(ours, x, G) < TOL
    ours = randomize_(enn.GroupInstanceNorm(3, G), 0)
    assert max_equivariance_error(ours, x, G) < TOL


def test_strided_even_map_is_refused():
    layer = enn.GroupConv(2, 2, 3, P4, stride=2)
    with pytest.raises(ValueError, match="not exactly equivariant"):
        layer(torch.randn(1, 2, 4, 8, 8))
    with pytest.raises(ValueError, match="not divisible"):
        enn.SpatialMaxPool2d(2)(torch.randn(1, 2, 4, 7, 8))
