"""Layer API: constructor conventions, bad input, state_dict round trips, autocast, torch.compile, CUDA."""

from __future__ import annotations

import io

import pytest
import torch

from e4net import groups
from e4net import nn as enn
from e4net.analysis import max_equivariance_error, randomize_
from e4net.groups import P4, P4M


def _layers(G):
    return [
        (enn.LiftingConv(3, 4, 5, G), torch.randn(2, 3, 9, 9)),
        (enn.GroupConv(4, 4, 3, G, bias=True), torch.randn(2, 4, G.order, 9, 9)),
        (enn.E4Conv(4, 4, 5, G, reduction=2, slices=2), torch.randn(2, 4, G.order, 9, 9)),
        (enn.GroupBatchNorm(4, G), torch.randn(2, 4, G.order, 9, 9)),
        (enn.GroupInstanceNorm(4, G), torch.randn(2, 4, G.order, 9, 9)),
    ]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: enn.GroupConv(2, 2, 4, "p4"), "odd"),
        (lambda: enn.LiftingConv(2, 2, 0, "p4"), "odd"),
        (lambda: enn.LiftingConv(2, 2, 4, "p4", padding="same"), "odd"),
        (lambda: enn.GroupConv(2, 2, 0, "p4", padding="valid"), "kernel_size must be a positive int"),
        (lambda: enn.GroupConv(2, 2, 3, "p4", padding="full"), "padding must be 'same' or 'valid'"),
        (lambda: enn.LiftingConv(2, 2, 3, "p4", padding=1), "padding must be 'same' or 'valid'"),
        (lambda: enn.E4Conv(2, 2, 3, "p6"), "unknown group 'p6'"),
        (lambda: enn.E4Conv(4, 6, 3, "p4", slices=4), "divisible by slices"),
        (lambda: enn.E4Conv(4, 4, 3, "p4", concat="sideways"), "concat must be one of"),
        (lambda: enn.E4Conv(4, 4, 3, "p4", backend="gpu-magic"), "unknown aggregation backend"),
        (lambda: enn.GroupConv(0, 2, 3, "p4"), "in_channels must be a positive int"),
        (lambda: enn.GroupConv(2, 2, 3, "p4", stride=0), "stride must be a positive int"),
        (lambda: enn.E4Conv(4, 4, 3, "p4", reduction=0), "reduction must be a positive int"),
        (lambda: enn.E4Conv(4, 4, 3, "p4", generator_norm="layer"), "generator_norm must be one of"),
        (lambda: enn.GroupInstanceNorm(0, "p4"), "channels must be a positive int"),
    ],
)
def test_bad_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "layer, x, match",
    [
        (enn.GroupConv(2, 2, 3, "p4"), torch.randn(1, 3, 4, 5, 5), "expected 2 fields, got 3"),
        (enn.GroupConv(2, 2, 3, "p4"), torch.randn(1, 2, 8, 5, 5), "group axis has size 8 but p4 has 4"),
        (enn.E4Conv(2, 2, 3, "p4m"), torch.randn(1, 2, 5, 5), "rank 5"),
        (enn.LiftingConv(1, 2, 3, "p4"), torch.randn(1, 1, 4, 5, 5), "rank 4"),
        (enn.LiftingConv(1, 2, 3, "p4"), torch.randn(1, 2, 5, 5), "expected 1 input channels, got 2"),
        (enn.E4Conv(2, 2, 3, "p4", stride=2), torch.randn(1, 2, 4, 6, 6), "not exactly equivariant"),
        (enn.GroupConv(2, 2, 4, "p4", padding="valid"), torch.randn(1, 2, 4, 3, 5), "3x5 map is smaller than the 4x4"),
        (enn.LiftingConv(1, 2, 2, "p4", stride=2, padding="valid"), torch.randn(1, 1, 7, 7), "6x6 kernel centres"),
        (enn.GroupBatchNorm(2, "p4"), torch.randn(2, 2, 8, 3, 3), "group axis has size 8"),
        (enn.GroupInstanceNorm(2, "p4"), torch.randn(2, 3, 4, 3, 3), "expected 2 fields, got 3"),
        (enn.GroupMaxPool(), torch.randn(2, 2, 3, 3), "rank 5"),
        (enn.SpatialAvgPool2d(2), torch.randn(2, 2, 4, 3, 4), "not divisible"),
    ],
)
def test_bad_input(layer, x, match):
    with pytest.raises(ValueError, match=match):
        layer(x)


@pytest.mark.parametrize("G", [P4, P4M], ids=str)
def test_state_dict_round_trip(G):
    for layer, x in _layers(G):
        randomize_(layer, 1, 0.5).eval()
        buf = io.BytesIO()
        torch.save(layer.state_dict(), buf)
        buf.seek(0)
        fresh = type(layer)(*_ctor_args(layer))
        fresh.load_state_dict(torch.load(buf))
        fresh.eval()
        assert torch.equal(fresh(x), layer(x))


def _ctor_args(layer):
    if isinstance(layer, (enn.GroupBatchNorm, enn.GroupInstanceNorm)):
        return (layer.num_features, layer.group)
    if isinstance(layer, enn.E4Conv):
        return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.group, layer.reduction, layer.slices)
    return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.group, layer.stride, layer.bias is not None)


def test_reset_parameters_and_repr():
    layer = enn.E4Conv(4, 4, 5, "p4m", reduction=2, slices=2)
    before = [p.clone() for p in layer.parameters()]
    torch.manual_seed(123)
    layer.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    assert "kernel_size=5, group=p4m, reduction=2, slices=2" in repr(layer)
    assert "generator_norm='instance'" in repr(layer) and "GroupInstanceNorm(2, eps=1e-05" in repr(layer)
    assert "GroupConv(4, 4, kernel_size=3, group=p4" in repr(enn.GroupConv(4, 4, 3, "p4"))


@pytest.mark.parametrize("G", [P4, P4M], ids=str)
def test_autocast_bfloat16_cpu(G):
    for layer, x in _layers(G):
        layer.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        ref = layer(x)
        assert y.shape == ref.shape and torch.isfinite(y).all()
        assert torch.allclose(y.float(), ref, rtol=0.1, atol=0.1 * ref.abs().max().item())


def test_gradients_flow_to_every_parameter():
    layer = enn.E4Conv(4, 4, 3, "p4", slices=2, bias=True)
    layer(torch.randn(2, 4, 4, 6, 6)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_torch_compile_eager_backend():
    """The layers trace through dynamo without graph breaks that change results (aot_eager: no C++ build)."""
    G = P4M
    model = torch.nn.Sequential(
        enn.LiftingConv(1, 4, 3, G), enn.E4Conv(4, 4, 3, G, slices=2), enn.GroupConv(4, 2, 3, G)
    )
    model.eval()
    x = torch.randn(2, 1, 7, 7)
    compiled = torch.compile(model, backend="aot_eager")
    assert torch.allclose(compiled(x), model(x), atol=1e-5)
    assert max_equivariance_error(compiled, x, G) < 1e-5


@pytest.mark.parametrize("group", ["p4", "O"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_torch_compile_fullgraph(training, group):
    """The aggregation backend is chosen when dynamo traces (a constant of the graph), so a model with E4 layers
    compiles to one graph (``fullgraph=True`` raises at any graph break) and matches eager, gradients included
    (on voxel grids too: the fused 3-D aggregation)."""
    torch.manual_seed(0)
    G = groups.get(group)
    model = torch.nn.Sequential(
        enn.LiftingConv(1, 4, 3, G), enn.E4Conv(4, 4, 3, G, slices=2, bias=True), enn.GroupConv(4, 2, 1, G)
    ).train(training)
    x = torch.randn(2, 1, *(5,) * G.spatial_dims)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.set_grad_enabled(training):
        y, ref = compiled(x), model(x)
    assert torch.allclose(y, ref, atol=1e-5)
    if training:
        grads = torch.autograd.grad(y.square().sum(), list(model.parameters()))
        refs = torch.autograd.grad(ref.square().sum(), list(model.parameters()))
        for g, r in zip(grads, refs, strict=True):
            assert torch.allclose(g, r, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_torch_compile_inductor():
    G = P4
    model = torch.nn.Sequential(
        enn.LiftingConv(1, 4, 3, G), enn.E4Conv(4, 4, 3, G, slices=2), enn.GroupConv(4, 2, 3, G)
    )
    torch._dynamo.reset()  # independent of the shapes earlier tests compiled these forwards with
    compiled = torch.compile(model, dynamic=False)
    for size in (7, 9):  # a second input size recompiles (dynamic=False: see docs/performance.md on dynamic shapes)
        x = torch.randn(2, 1, size, size)
        assert torch.allclose(compiled(x), model(x), atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("G", [P4, P4M], ids=str)
def test_cuda_matches_cpu(G):
    for layer, x in _layers(G):
        randomize_(layer, 2, 0.5).eval()
        ref = layer(x)
        y = layer.cuda()(x.cuda()).cpu()
        assert torch.allclose(y, ref, rtol=1e-4, atol=1e-4)
        assert max_equivariance_error(layer, x.cuda(), G) < 1e-4


@pytest.mark.parametrize("G", [P4, P4M], ids=str)
def test_e4_examples_are_independent_in_train_mode(G):
    """The per-example generator norm: in train mode an example's output does not depend on the rest of the batch
    (with ``generator_norm="batch"`` it does)."""
    x = torch.randn(3, 4, G.order, 7, 7)
    layer = randomize_(enn.E4Conv(4, 4, 3, G), 0, 0.5).train()
    assert torch.allclose(layer(x)[:1], layer(x[:1]), atol=1e-6)
    batch = randomize_(enn.E4Conv(4, 4, 3, G, generator_norm="batch"), 0, 0.5).train()
    assert not torch.allclose(batch(x)[:1], batch(x[:1]), atol=1e-3)


@pytest.mark.parametrize("G", [P4, P4M], ids=str)
def test_padding_valid_shapes_macs_and_repr(G):
    """``padding="valid"``: no padding (H' = H - k + 1, even k allowed); MACs count the smaller output."""
    from e4net.analysis import count

    lift = enn.LiftingConv(3, 4, 4, G, padding="valid")
    conv = enn.GroupConv(4, 5, 4, G, padding="valid")
    x = torch.randn(2, 3, 9, 8)
    assert lift(x).shape == (2, 4, G.order, 6, 5) and conv(lift(x)).shape == (2, 5, G.order, 3, 2)
    n = G.order
    assert count(lift, (3, 9, 8)).macs == 4 * n * 3 * 16 * 6 * 5
    assert count(conv, (4, n, 6, 5)).macs == 5 * n * 4 * n * 16 * 3 * 2
    same = enn.GroupConv(4, 5, 3, G)
    assert count(same, (4, n, 6, 5)).macs == 5 * n * 4 * n * 9 * 6 * 5
    assert enn.GroupConv(4, 5, 3, G, stride=2, padding="valid")(torch.randn(1, 4, n, 7, 7)).shape[-2:] == (3, 3)
    assert "padding='valid'" in repr(conv) and "padding" not in repr(same)
    assert (conv.padding, same.padding) == ("valid", "same")
