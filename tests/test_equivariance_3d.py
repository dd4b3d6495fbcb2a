"""Exact equivariance of every core layer on voxel grids, f(T_g x) = T'_g f(x) for all 24 elements of O and all 48 of
Oh, with randomized parameters and buffers; strides and pools that cannot be exact are refused; planted bugs (a
kernel transformed by g^-1 instead of g; a group convolution that forgets to permute its kernels' group axis) are
caught."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e4net import nn as enn
from e4net.analysis import equivariance_error, max_equivariance_error, randomize_
from e4net.groups import OH, Group, O

GROUPS = [O, OH]
TOL = 1e-5  # relative, float32


def _layer_and_input(kind: str, G: Group, cin: int, cout: int, k: int, size: tuple, stride: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    if kind.startswith("lifting"):
        padding = "valid" if kind == "lifting-valid" else "same"
        layer = enn.LiftingConv(cin, cout, k, G, stride=stride, bias=True, padding=padding)
        x = torch.randn(2, cin, *size, generator=gen)
    else:
        x = torch.randn(2, cin, G.order, *size, generator=gen)
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


LAYERS = ["lifting", "gconv", "lifting-valid", "gconv-valid", "e4", "e4-none", "e4-batch", "bn", "in", "slotwise"]


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(LAYERS),
    gi=st.sampled_from([0, 1]),
    cin=st.integers(1, 3),
    cout=st.integers(1, 4),
    k=st.sampled_from([1, 3]),
    size=st.tuples(st.integers(2, 5), st.integers(2, 5), st.integers(2, 5)),
    stride=st.sampled_from([1, 2]),
    train=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_layer_equivariance_3d(kind, gi, cin, cout, k, size, stride, train, seed):
    """Every element of O / Oh, on boxes of any shape (the elements that permute axes also permute the box)."""
    G = GROUPS[gi]
    if stride == 2 and kind in ("bn", "in", "slotwise"):
        stride = 1
    if kind.endswith("-valid"):  # unpadded: any k (even too), on maps at least as large as the kernel
        k += seed % 2
        size = tuple(max(n, k) for n in size)
        if stride == 2:  # exact when the grid of kernel centres has odd size
            size = tuple(n + (n - k) % 2 for n in size)
    elif stride == 2:
        size = tuple(n | 1 for n in size)
    layer, x = _layer_and_input(kind, G, cin, cout, k, size, stride, seed)
    layer.train(train)
    for g in G.elements():
        err = equivariance_error(layer, x, G, g)
        assert err < TOL, f"{kind} {G.name} g={G.element_name(g)} size={size} stride={stride}: rel err {err:.2e}"


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("kind", LAYERS)
def test_every_layer_every_element_3d(G, kind):
    """Each layer kind once on a fixed box with k = 3 (the property test above draws the rest)."""
    k = 2 if kind.endswith("-valid") else 3
    layer, x = _layer_and_input(kind, G, 2, 2, k, (3, 4, 5), 1, seed=5)
    layer.train()
    assert max_equivariance_error(layer, x, G) < TOL


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("backend", ["reference", "shift", "numba"])
def test_e4_equivariance_per_backend_3d(G, backend):
    layer = randomize_(enn.E4Conv(3, 4, 3, G, slices=2, backend=backend, bias=True), 3, 0.5)
    x = torch.randn(2, 3, G.order, 4, 5, 3)
    assert max_equivariance_error(layer, x, G) < TOL


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_stack_is_invariant_3d(G):
    """LiftingConv -> BN -> E4Conv -> pool -> GroupConv -> GroupMaxPool -> global pooling: invariant to every
    element (eval mode, randomized running statistics)."""
    model = torch.nn.Sequential(
        enn.LiftingConv(2, 4, 3, G),
        enn.GroupBatchNorm(4, G),
        torch.nn.ReLU(),
        enn.E4Conv(4, 4, 3, G, slices=2),
        torch.nn.ReLU(),
        enn.SpatialMaxPool3d(2),
        enn.GroupConv(4, 3, 3, G),
        enn.GroupMaxPool(),
        enn.GlobalAvgPool(),
    )
    randomize_(model, 7, 0.5).eval()
    x = torch.randn(2, 2, 4, 4, 4)
    for g in G.elements():
        assert equivariance_error(model, x, G, g) < TOL


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_pooling_equivariance_3d(G):
    x = torch.randn(2, 2, G.order, 4, 6, 2)
    for pool in (enn.SpatialMaxPool3d(2), enn.SpatialAvgPool3d(2)):
        assert max_equivariance_error(pool, x, G) < TOL
        assert max_equivariance_error(pool, x[:, :, 0], G) < TOL  # voxel signals (B, C, D, H, W) too
    assert max_equivariance_error(enn.GroupMaxPool(), x, G) < TOL  # invariant in the group axis: maps to voxels
    assert max_equivariance_error(enn.GroupAvgPool(), x, G) < TOL
    pool = enn.GlobalMaxPool(group_pool=False, spatial_dims=3)  # (B, C, |A|): the group axis permuted by g
    for g in G.elements():
        perm = torch.tensor(G.regular_permutation(g))
        assert torch.equal(pool(G.act_on_features(x, g)), pool(x)[:, :, perm])


def test_inexact_strides_and_pools_are_refused():
    with pytest.raises(ValueError, match="not exactly equivariant.*depth, height and width are odd"):
        enn.GroupConv(2, 2, 3, O, stride=2)(torch.randn(1, 2, 24, 5, 5, 6))
    with pytest.raises(ValueError, match="not exactly equivariant"):
        enn.LiftingConv(1, 2, 3, O, stride=2)(torch.randn(1, 1, 4, 5, 5))
    with pytest.raises(ValueError, match="not exactly equivariant"):
        enn.E4Conv(2, 2, 3, O, stride=2)(torch.randn(1, 2, 24, 5, 6, 5))
    with pytest.raises(ValueError, match="not divisible into 2x2x2 windows"):
        enn.SpatialMaxPool3d(2)(torch.randn(1, 2, 24, 4, 4, 5))
    with pytest.raises(ValueError, match="smaller than the 3x3x3 kernel"):
        enn.GroupConv(2, 2, 3, O, padding="valid")(torch.randn(1, 2, 24, 4, 2, 4))
    with pytest.raises(ValueError, match=r"voxel batch \(B, C, D, H, W\) of rank 5"):
        enn.LiftingConv(1, 2, 3, O)(torch.randn(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, C, \|G\|, D, H, W\) of rank 6 for O"):
        enn.E4Conv(2, 2, 3, O)(torch.randn(1, 2, 24, 5, 5))
    with pytest.raises(ValueError, match="group axis has size 24 but Oh has 48"):
        enn.GroupBatchNorm(2, OH)(torch.randn(1, 2, 24, 3, 3, 3))


def test_3d_shapes_params_and_macs():
    x = torch.randn(1, 2, 6, 5, 4)
    lift = enn.LiftingConv(2, 3, 3, O)
    y = lift(x)
    assert y.shape == (1, 3, 24, 6, 5, 4) and lift.weight.shape == (3, 2, 3, 3, 3)
    gconv = enn.GroupConv(3, 5, 3, O)
    assert gconv.weight.shape == (5, 3, 24, 3, 3, 3) and gconv(y).shape == (1, 5, 24, 6, 5, 4)
    assert gconv.count_macs((y,), gconv(y)) == 5 * 24 * 120 * 3 * 24 * 27
    e4 = enn.E4Conv(3, 4, 3, O, slices=2)
    assert e4.span.out_channels == 2 * 27 and e4(y).shape == (1, 4, 24, 6, 5, 4)
    assert enn.LiftingConv(1, 2, 3, O, stride=2)(torch.randn(1, 1, 5, 7, 3)).shape == (1, 2, 24, 3, 4, 2)


# ---- planted bugs: the checks above must catch them -----------------------------------------------------------------


def _inverse_rows(G: Group, table: torch.Tensor) -> torch.Tensor:
    """The planted bug: slot ``a`` transforms its kernel by ``a^-1`` instead of ``a``."""
    return table[[G.inverse(a) for a in G.elements()]]


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("kind", ["lifting", "gconv", "e4"])
def test_planted_inverse_kernel_transform_is_caught(G, kind):
    layer, x = _layer_and_input(kind, G, 2, 2, 3, (4, 4, 4), 1, seed=1)
    layer.eval()
    assert max_equivariance_error(layer, x, G) < TOL
    layer.relative_position_index = _inverse_rows(G, layer.relative_position_index)
    assert max_equivariance_error(layer, x, G) > 1e-3


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_planted_missing_group_permutation_is_caught(G, monkeypatch):
    """A group convolution that transforms its kernels spatially but leaves their group axis alone."""
    layer, x = _layer_and_input("gconv", G, 2, 2, 3, (4, 4, 4), 1, seed=2)
    layer.eval()
    bank = torch.stack([G.act_on_signal(layer.weight, a) for a in G.elements()], 1)
    monkeypatch.setattr(layer, "filter_bank", lambda: bank.reshape(2 * G.order, 2 * G.order, 3, 3, 3))
    assert max_equivariance_error(layer, x, G) > 1e-3
