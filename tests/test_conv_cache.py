"""Inference caches the folded filter banks of LiftingConv and GroupConv (src/e4net/nn/conv.py): reused while the
weight is unchanged, rebuilt after every kind of change, never used when autograd needs the gather."""

from __future__ import annotations

import pytest
import torch

from e4net.nn import GroupConv, LiftingConv


def _layer_and_input(kind: str):
    torch.manual_seed(0)
    if kind == "lifting":
        return LiftingConv(2, 3, 3, "p4m"), torch.randn(2, 2, 7, 7)
    if kind == "group":
        return GroupConv(2, 3, 3, "p4"), torch.randn(2, 2, 4, 7, 7)
    return GroupConv(2, 3, 1, "p4"), torch.randn(2, 2, 4, 5, 5)  # the 1x1 GEMM path


def _counting(layer, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = type(layer).filter_bank
    monkeypatch.setattr(type(layer), "filter_bank", lambda self: calls.append(1) or real(self))
    return calls


KINDS = ["lifting", "group", "group1x1"]


@pytest.mark.parametrize("kind", KINDS)
def test_eval_no_grad_reuses_the_bank(kind, monkeypatch):
    layer, x = _layer_and_input(kind)
    calls = _counting(layer, monkeypatch)
    layer.eval()
    with torch.no_grad():
        y1 = layer(x)
        y2 = layer(x)
    with torch.inference_mode():
        y3 = layer(x)
    assert len(calls) == 1
    assert torch.equal(y1, y2) and torch.equal(y1, y3)
    layer.weight.requires_grad_(False)  # a frozen weight: grad mode does not matter
    layer(x)
    assert len(calls) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_no_cache_in_training_or_when_autograd_needs_the_gather(kind, monkeypatch):
    layer, x = _layer_and_input(kind)
    calls = _counting(layer, monkeypatch)
    layer.train()
    with torch.no_grad():
        layer(x)
        layer(x)
    assert len(calls) == 2
    layer.eval()
    y = layer(x)  # grad enabled and the weight requires it: autograd must see the gather
    layer(x)
    assert len(calls) == 4
    y.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def _fresh(layer, x):
    with torch.no_grad():
        return torch.nn.functional.conv2d(
            x if x.dim() == 4 else x.flatten(1, 2), layer.filter_bank(), None, 1, layer.kernel_size // 2
        ).view(x.shape[0], layer.out_channels, layer.group.order, *x.shape[-2:])


@pytest.mark.parametrize("kind", KINDS)
def test_every_change_invalidates(kind):
    layer, x = _layer_and_input(kind)
    layer.eval()

    def out():
        with torch.no_grad():
            return layer(x)

    out()
    # in-place write under no_grad (what an optimiser does)
    with torch.no_grad():
        layer.weight.mul_(-2.0)
    assert torch.allclose(out(), _fresh(layer, x), atol=1e-6)
    # an optimiser step in training mode, then back to eval
    layer.train()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).square().sum().backward()
    opt.step()
    layer.eval()
    assert torch.allclose(out(), _fresh(layer, x), atol=1e-6)
    # an in-place optimiser step while in eval mode (no train() in between)
    opt.zero_grad()
    layer(x).square().sum().backward()
    opt.step()
    assert torch.allclose(out(), _fresh(layer, x), atol=1e-6)
    # load_state_dict
    other, _ = _layer_and_input(kind)
    torch.nn.init.normal_(other.weight)
    layer.load_state_dict(other.state_dict())
    assert torch.allclose(out(), _fresh(layer, x), atol=1e-6)
    # a new parameter object
    layer.weight = torch.nn.Parameter(torch.randn_like(layer.weight))
    assert torch.allclose(out(), _fresh(layer, x), atol=1e-6)
    # dtype change
    layer.double()
    x = x.double()
    y = out()
    assert y.dtype == torch.float64 and torch.allclose(y, _fresh(layer, x), atol=1e-12)
    # .data writes bypass the version counter: documented, clear_cache() is the way
    layer.weight.data.zero_()
    layer.clear_cache()
    assert out().abs().max() == 0


def test_train_then_eval_clears_and_rebuilds(monkeypatch):
    layer, x = _layer_and_input("group")
    calls = _counting(layer, monkeypatch)
    layer.eval()
    with torch.no_grad():
        layer(x)
        layer.train()
        assert layer._bank_cache is None
        layer.eval()
        layer(x)
    assert len(calls) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_table_or_bank_builder_invalidates(kind):
    """The planted-bug tests replace the table or ``filter_bank`` on a layer that already ran in eval mode."""
    layer, x = _layer_and_input(kind)
    layer.eval()
    with torch.no_grad():
        before = layer(x)
        layer.relative_position_index = layer.relative_position_index.flip(0)  # another table: another bank
        assert not torch.allclose(layer(x), before)
        layer.filter_bank = lambda: torch.zeros_like(type(layer).filter_bank(layer))
        assert layer(x).abs().max() == 0
