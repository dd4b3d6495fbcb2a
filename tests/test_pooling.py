"""Pooling layers against hand-written reductions: group pooling, k x k spatial pooling, global pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from e4net import nn as enn
from e4net.groups import P4, P4M
from e4net.nn import _window_max

GROUPS = [P4, P4M]


def _feat(G, h=4, w=6, seed=0) -> torch.Tensor:
    return torch.randn(2, 3, G.order, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_group_pooling_reduces_the_group_axis(G):
    x = _feat(G)
    assert torch.equal(enn.GroupMaxPool()(x), x.max(dim=2).values)
    torch.testing.assert_close(enn.GroupAvgPool()(x), x.sum(dim=2) / G.order)
    for layer in (enn.GroupMaxPool(), enn.GroupAvgPool()):
        with pytest.raises(
            ValueError,
            match=rf"{type(layer).__name__}: expected a group feature map .* rank 5 or .* rank 6, got \(2, 3, 4\)",
        ):
            layer(torch.zeros(2, 3, 4))
        with pytest.raises(ValueError, match="rank 6, got list"):
            layer([1, 2])


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_spatial_pooling_on_each_group_slot(G, k):
    x = _feat(G, h=6, w=6)
    for layer, fn in ((enn.SpatialMaxPool2d(k), F.max_pool2d), (enn.SpatialAvgPool2d(k), F.avg_pool2d)):
        y = layer(x)
        assert y.shape == (2, 3, G.order, 6 // k, 6 // k)
        for a in G.elements():  # slot by slot, windows k x k with stride k
            assert torch.equal(y[:, :, a], fn(x[:, :, a], k, stride=k))
        assert torch.equal(layer(x[:, :, 0]), fn(x[:, :, 0], k, stride=k))  # plain images too
        assert repr(layer) == f"{type(layer).__name__}(kernel_size={k})"


def test_spatial_pooling_window_by_hand():
    x = torch.arange(16.0).view(1, 1, 1, 4, 4)
    assert enn.SpatialMaxPool2d()(x).view(-1).tolist() == [5.0, 7.0, 13.0, 15.0]
    assert enn.SpatialAvgPool2d(2)(x).view(-1).tolist() == [2.5, 4.5, 10.5, 12.5]
    assert enn.SpatialMaxPool2d().kernel_size == 2


def test_spatial_pooling_refuses_bad_input():
    for cls in (enn.SpatialMaxPool2d, enn.SpatialAvgPool2d):
        name = cls.__name__
        for bad in (0, -2, 2.0, True):
            with pytest.raises(ValueError, match=rf"^{name}: kernel_size must be a positive int, got {bad!r}$"):
                cls(bad)
        with pytest.raises(
            ValueError, match=rf"{name}: expected \(B, C, H, W\) or \(B, C, \|G\|, H, W\), got \(2, 3\)"
        ):
            cls(2)(torch.zeros(2, 3))
        with pytest.raises(ValueError, match=r"got \(1, 1, 1, 1, 1, 4\)"):
            cls(2)(torch.zeros(1, 1, 1, 1, 1, 4))
        with pytest.raises(ValueError, match="got str"):
            cls(2)("x")
        for h, w in ((6, 7), (7, 6)):  # one side divisible, the other not
            with pytest.raises(ValueError, match=rf"{name}: a {h}x{w} map is not divisible into 3x3 windows"):
                cls(3)(torch.zeros(1, 1, 4, h, w))


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_global_pooling(G):
    x = _feat(G)
    flat = x.reshape(2, 3, -1)
    for pooled, reduce in ((enn.GlobalMaxPool, lambda t, d: t.amax(d)), (enn.GlobalAvgPool, lambda t, d: t.mean(d))):
        torch.testing.assert_close(pooled()(x), reduce(flat, -1))  # over the group axis and space: (B, C)
        assert pooled().group_pool is True
        keep = pooled(group_pool=False)
        assert keep.group_pool is False
        torch.testing.assert_close(keep(x), reduce(x, (-2, -1)))  # over space only: (B, C, |G|)
        assert keep(x).shape == (2, 3, G.order)
        img = x[:, :, 0]  # a plain (B, C, H, W) map pools to (B, C) either way
        torch.testing.assert_close(keep(img), reduce(img.reshape(2, 3, -1), -1))
        torch.testing.assert_close(pooled()(img), reduce(img.reshape(2, 3, -1), -1))


# ---- the numba window max (e4net.nn._window_max) against torch's CPU max pooling ------------------------------------


def _torch_max_pool(x: torch.Tensor, k: int, d: int) -> torch.Tensor:
    fn = F.max_pool3d if d == 3 else F.max_pool2d
    y = fn(x.reshape(-1, *x.shape[-d:]), k)
    return y.view(*x.shape[:-d], *y.shape[-d:])


@settings(max_examples=40, deadline=None)
@given(
    d=st.sampled_from([2, 3]),
    k=st.sampled_from([1, 2, 3]),
    lead=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    cells=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    values=st.sampled_from(["normal", "ties", "special"]),
    seed=st.integers(0, 2**16),
)
def test_window_max_equals_torch_max_pool(d, k, lead, cells, dtype, values, seed):
    """Values and gradients equal torch's bit for bit: ties (small integers, ReLU zeros) give the gradient to the
    window's first maximum, NaN wins, -inf windows pick their first entry."""
    gen = torch.Generator().manual_seed(seed)
    shape = (*lead, *(c * k for c in cells[:d]))
    if values == "normal":
        x = torch.randn(shape, generator=gen, dtype=dtype)
    elif values == "ties":
        x = torch.randint(-1, 3, shape, generator=gen).to(dtype).clamp_min(0)
    else:
        x = torch.randn(shape, generator=gen, dtype=dtype)
        pick = torch.randint(0, 6, shape, generator=gen)
        x[pick == 0] = float("nan")
        x[pick == 1] = float("-inf")
        x[pick == 2] = float("inf")
    x.requires_grad_()
    y = _window_max.window_max(x, k, d)
    ref = _torch_max_pool(x, k, d)
    assert y.shape == ref.shape and y.dtype == dtype
    assert torch.equal(y.nan_to_num(), ref.nan_to_num()) and torch.equal(y.isnan(), ref.isnan())
    g = torch.randn(ref.shape, generator=gen, dtype=dtype)
    (gx,) = torch.autograd.grad(y, x, g)
    (gref,) = torch.autograd.grad(ref, x, g)
    assert torch.equal(gx, gref)


@pytest.mark.parametrize("cls, d", [(enn.SpatialMaxPool2d, 2), (enn.SpatialMaxPool3d, 3)])
def test_spatial_max_pool_runs_the_window_max_on_cpu(cls, d, monkeypatch):
    """The layers take the numba kernels on float CPU tensors (seen by their call), torch's op otherwise."""
    calls = []
    real = _window_max.window_max
    monkeypatch.setattr(_window_max, "window_max", lambda *a: calls.append(a) or real(*a))
    x = torch.randn(2, 3, 4, *(4,) * d)
    y = cls(2)(x)
    assert calls and torch.equal(y, _torch_max_pool(x, 2, d))
    calls.clear()
    cls(2)(x.to(torch.int32))
    assert not calls  # integers: torch's op
