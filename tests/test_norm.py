"""GroupBatchNorm and GroupInstanceNorm: statistics shared over the group axis, checked without equivariance.

The equivariance tests transform the whole batch by one element, and statistics taken per group slot stay
equivariant under that (every slot of every example moves together). These tests see the difference: the norms
against their stated ``nn.BatchNorm3d`` / ``nn.GroupNorm`` semantics (outputs, running statistics, eval mode), and
an equivariance check that transforms *one* example of the batch only.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from e4net import nn as enn
from e4net.analysis import randomize_
from e4net.groups import P4, P4M

GROUPS = [P4, P4M]


def _batch(G, b=3, c=2, h=5, w=5, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # a different mean and scale per group slot, so per-slot and shared statistics differ clearly
    slot = torch.arange(G.order, dtype=torch.float32).view(1, 1, G.order, 1, 1)
    return torch.randn(b, c, G.order, h, w, generator=gen) * (1 + slot) + 3 * slot


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_group_batch_norm_is_batchnorm3d(G, momentum, affine):
    """Train mode (three steps: outputs, running mean/var, counter, gradients), then eval mode."""
    ours = enn.GroupBatchNorm(2, G, momentum=momentum, affine=affine)
    ref = nn.BatchNorm3d(2, momentum=momentum, affine=affine)
    if affine:
        randomize_(ours, 1)
    ref.load_state_dict(ours.state_dict())
    for step in range(3):
        x = _batch(G, seed=step)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-5, atol=1e-6, msg=name)
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    if affine:
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)
    ours.eval(), ref.eval()
    x = _batch(G, seed=7)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_group_batch_norm_statistics_by_hand(G):
    """One step in train mode: one mean / unbiased variance per field over (batch, group axis, space)."""
    layer = enn.GroupBatchNorm(2, G, momentum=0.25, eps=1e-3)
    randomize_(layer, 2)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    old_mean, old_var = layer.running_mean.clone(), layer.running_var.clone()  # randomized too
    x = _batch(G)
    y = layer(x)
    dims = (0, 2, 3, 4)
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    expect = (x - mean.view(1, -1, 1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1, 1) + 1e-3)
    expect = expect * weight.view(1, -1, 1, 1, 1) + bias.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.running_mean, 0.75 * old_mean + 0.25 * mean, rtol=1e-5, atol=1e-6)
    unbiased = x.var(dims, unbiased=True)
    torch.testing.assert_close(layer.running_var, 0.75 * old_var + 0.25 * unbiased, rtol=1e-5, atol=1e-6)
    # the statistics do not depend on the group slot: every slot of a field has mean and scale of the whole field
    per_slot_mean = y.detach().mean((0, 3, 4))
    assert per_slot_mean.std(1).min() > 0.1  # the input's slots differ, and the norm keeps them apart


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("layer_kind", ["batch-train", "batch-eval", "instance"])
def test_norm_is_equivariant_when_one_example_is_transformed(G, layer_kind):
    """Transform example 1 only: its output is transformed the same way, the other examples' outputs are unchanged.

    Statistics per group slot would change (the transformed example permutes its slots), so the other examples'
    outputs would move: this is what the whole-batch equivariance tests cannot see.
    """
    if layer_kind == "instance":
        layer = enn.GroupInstanceNorm(2, G)
    else:
        layer = enn.GroupBatchNorm(2, G)
        layer.train(layer_kind == "batch-train")
    randomize_(layer, 3, scale=0.5)  # affine weights (and running statistics) that training could reach
    x = _batch(G)
    with torch.no_grad():
        y = layer(x)
        for g in G.elements()[1:]:
            x_one = x.clone()
            x_one[1] = G.act_on_features(x[1], g)
            y_one = layer(x_one)
            torch.testing.assert_close(y_one[1], G.act_on_features(y[1], g), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(y_one[[0, 2]], y[[0, 2]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_group_instance_norm_is_group_norm(G):
    """``nn.GroupNorm(C, C)`` on the (B, C, |A|, H, W) layout: one mean/var per example and field."""
    layer = randomize_(enn.GroupInstanceNorm(3, G, eps=0.5), 4)  # a large eps, so that it shows in the output
    ref = nn.GroupNorm(3, 3, eps=0.5)
    ref.load_state_dict(layer.state_dict())
    x = _batch(G, c=3)
    torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)
    mean = x.mean((2, 3, 4), keepdim=True)
    var = x.var((2, 3, 4), unbiased=False, keepdim=True)
    expect = (x - mean) / torch.sqrt(var + 0.5) * layer.weight.view(1, -1, 1, 1, 1) + layer.bias.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(layer(x), expect.detach(), rtol=1e-5, atol=1e-5)
    plain = enn.GroupInstanceNorm(3, G, affine=False)
    assert plain.weight is None and plain.bias is None and list(plain.parameters()) == []
    torch.testing.assert_close(plain(x), (x - mean) / torch.sqrt(var + 1e-5), rtol=1e-5, atol=1e-5)
    assert repr(plain) == f"GroupInstanceNorm(3, eps=1e-05, affine=False, group={G.name})"


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_group_batch_norm_without_running_statistics(G):
    """``track_running_stats=False``: batch statistics in eval mode too, as ``nn.BatchNorm3d``."""
    ours = enn.GroupBatchNorm(2, G, track_running_stats=False).eval()
    ref = nn.BatchNorm3d(2, track_running_stats=False).eval()
    assert ours.running_mean is None and not ours.track_running_stats
    x = _batch(G)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    assert ours(x).mean((0, 2, 3, 4)).abs().max() < 1e-5  # normalised with this batch's own statistics


def test_defaults_are_batchnorm3d_defaults():
    ours, ref = enn.GroupBatchNorm(3, P4), nn.BatchNorm3d(3)
    for attr in ("eps", "momentum", "affine", "track_running_stats"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert enn.GroupInstanceNorm(3, P4).eps == nn.GroupNorm(3, 3).eps


def test_norm_checks_and_repr():
    bn = enn.GroupBatchNorm(4, "p4m")
    assert bn.group is P4M and repr(bn).endswith("track_running_stats=True, group=p4m)")
    assert enn.GroupInstanceNorm(2, "p4").group is P4
    inorm = enn.GroupInstanceNorm(2, P4)
    assert torch.equal(inorm.weight, torch.ones(2)) and torch.equal(inorm.bias, torch.zeros(2))
    for cls in (enn.GroupBatchNorm, enn.GroupInstanceNorm):
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match=rf"^{cls.__name__}: channels must be a positive int, got {bad!r}$"):
                cls(bad, P4)
    for layer in (bn, enn.GroupInstanceNorm(4, P4M)):
        with pytest.raises(ValueError, match=type(layer).__name__):
            layer(torch.randn(2, 4, 4, 3, 3))  # the group axis of p4, not p4m
        with pytest.raises(ValueError, match=type(layer).__name__):
            layer(torch.randn(2, 3, 8, 3, 3))  # wrong number of fields


# ---- norm_relu: ReLU(norm(x)) fused on float CPU tensors (e4net.nn._norm_relu) ---------------------------------------


def _norm_pair(kind, G, c, momentum, affine, track, seed):
    gen = torch.Generator().manual_seed(seed)
    if kind == "batch":
        norm = enn.GroupBatchNorm(c, G, momentum=momentum, affine=affine, track_running_stats=track)
    else:
        norm = enn.GroupInstanceNorm(c, G, affine=affine)
    for t in [*norm.parameters(), *(b for b in norm.buffers() if b.is_floating_point())]:
        t.data = torch.rand(t.shape, generator=gen, dtype=t.dtype) * 2 - 0.5  # random weights, running statistics
    if kind == "batch" and track:
        norm.running_var.data = norm.running_var.abs() + 0.5
    return norm.double(), copy.deepcopy(norm).double()


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["batch", "instance"]),
    G=st.sampled_from(GROUPS),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
    momentum=st.sampled_from([0.1, 0.7, None]),
    affine=st.booleans(),
    track=st.booleans(),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_norm_relu_is_the_norm_then_relu(kind, G, shape, momentum, affine, track, training, seed):
    """Outputs, gradients (input, weight, bias) and the updated buffers equal ``relu(norm(x))`` of torch's ops, for
    random parameters and running statistics, in train and eval mode (float64: up to rounding)."""
    b, c, h, w = shape
    if kind == "batch" and (training or not track) and b * G.order * h * w == 1:
        return  # torch refuses one value per channel in training; norm_relu hands that case to torch
    ref, fused = _norm_pair(kind, G, c, momentum, affine, track, seed)
    ref.train(training), fused.train(training)
    gen = torch.Generator().manual_seed(seed + 1)
    x = (torch.randn(b, c, G.order, h, w, generator=gen, dtype=torch.float64) * 2 + 0.3).requires_grad_()
    want = torch.relu(ref(x))
    got = enn.norm_relu(fused, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    g = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    wrt_ref = [x, *ref.parameters()]
    wrt_fused = [x, *fused.parameters()]
    for a, e in zip(torch.autograd.grad(got, wrt_fused, g), torch.autograd.grad(want, wrt_ref, g)):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)
    for (name, a), (_, e) in zip(fused.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("kind", ["batch", "instance"])
def test_norm_relu_reads_the_batch_inside_layout(kind):
    """A map stored as ``(C, |A|, B, H, W)`` (E4's shared 1x1 maps) gives the results of its contiguous copy, and its
    gradient comes back in that layout; an incoming gradient stored so is read in place."""
    norm, _ = _norm_pair(kind, P4M, 3, 0.1, True, True, seed=4)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, P4M.order, 5, 6, generator=gen, dtype=torch.float64)
    inside = x.permute(1, 2, 0, 3, 4).contiguous().permute(2, 0, 1, 3, 4).requires_grad_()
    x.requires_grad_()
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    g_inside = g.permute(1, 2, 0, 3, 4).contiguous().permute(2, 0, 1, 3, 4)  # the incoming gradient stored so too
    outs, grads = [], []
    for xx, gg in ((x, g), (inside, g), (x, g_inside), (inside, g_inside)):
        y = enn.norm_relu(copy.deepcopy(norm), xx)
        outs.append(y)
        grads.append(torch.autograd.grad(y, xx, gg)[0])
    for y, gx in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(y, outs[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gx, grads[0], rtol=1e-12, atol=1e-12)
    assert outs[1].is_contiguous() and grads[1].permute(1, 2, 0, 3, 4).is_contiguous() and grads[2].is_contiguous()


@pytest.mark.parametrize("from_x, per_example", [(True, False), (True, True), (False, False)])
def test_norm_relu_gradcheck(from_x, per_example):
    """float64 gradcheck of the fused op's backward (statistics of x, per batch or per example; constants)."""
    from e4net.nn import _norm_relu

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 2, 4, 3, 3, generator=gen, dtype=torch.float64) + 0.4).requires_grad_()
    w = (torch.rand(2, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    bias = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(x, w, bias):
        if from_x:
            mean, var, _ = _norm_relu.moments(x, per_example)
        else:
            mean, var = np.array([0.2, -0.1]), np.array([1.5, 0.7])
        return _norm_relu.norm_relu(x, w, bias, mean, var, 1e-5, from_x, per_example)

    assert torch.autograd.gradcheck(f, (x, w, bias))


def test_norm_relu_runs_fused_only_where_it_applies(monkeypatch):
    """Float CPU tensors in eager mode take the fused op; hooks on the norm (e4net.count's), tracing by torch.fx and
    other dtypes run the norm module and a ReLU."""
    from e4net.nn import _norm_relu

    calls = []
    real = _norm_relu.norm_relu
    monkeypatch.setattr(_norm_relu, "norm_relu", lambda *a, **k: calls.append(1) or real(*a, **k))
    norm = enn.GroupBatchNorm(2, P4)
    x = torch.randn(2, 2, 4, 3, 3)
    enn.norm_relu(norm, x)
    assert calls
    calls.clear()
    seen = []
    handle = norm.register_forward_hook(lambda *a: seen.append(1))
    y = enn.norm_relu(norm, x)
    handle.remove()
    assert seen and not calls and (y >= 0).all()
    enn.norm_relu(norm, x.to(torch.bfloat16))  # not a dtype of the kernels: the modules
    assert not calls
    with pytest.raises(ValueError, match="expected 2 fields"):
        enn.norm_relu(norm, torch.randn(2, 3, 4, 3, 3))

    class Block(nn.Module):  # torch.fx traces norm_relu as the two modules (export() relies on this)
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm3d(2)

        def forward(self, x):
            return enn.norm_relu(self.norm, x)

    graph = torch.fx.symbolic_trace(Block()).graph
    assert [n.op for n in graph.nodes] == ["placeholder", "call_module", "call_function", "output"]

    class Mine(enn.GroupBatchNorm):  # a subclass may change forward (as nn.SyncBatchNorm does): run as a module
        def forward(self, x):
            return super().forward(x) * 2

    calls.clear()
    torch.testing.assert_close(enn.norm_relu(Mine(2, P4), x), torch.relu(Mine(2, P4)(x)))
    assert not calls
    y = enn.norm_relu(nn.Identity(), x)  # any module: ReLU of its output, never in place on the input
    assert torch.equal(y, torch.relu(x)) and (x < 0).any()
