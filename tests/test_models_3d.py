"""The 3-D models (e4net3d, gcnn3d, cnn3d): registry, topology and width of the twins, exact invariance of the logits
to every element of O (and Oh) with randomized weights and batch-norm statistics, and counts."""

from __future__ import annotations

import pytest
import torch

import e4net
from e4net import nn as enn
from e4net.groups import OH, O
from e4net.models import create_model, list_models, model_spec

SHAPE = (1, 16, 16, 16)


def _randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64, random parameters, batch-norm statistics calibrated on random inputs then perturbed, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model = model.double()
    norms = (torch.nn.modules.batchnorm._BatchNorm, enn.GroupInstanceNorm)
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, norms):  # around the identity, so the network stays sensitive to its input
                    p.copy_((name == "weight") + 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * p.std().clamp_min(0.05))
        model.train()
        model(torch.randn(4, *SHAPE, generator=gen, dtype=torch.float64))
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.add_(0.2 * torch.randn(m.running_mean.shape, generator=gen, dtype=torch.float64))
                m.running_var.mul_(0.5 + torch.rand(m.running_var.shape, generator=gen, dtype=torch.float64))
    return model.eval()


def _invariance(model, G, x) -> float:
    with torch.no_grad():
        y = model(x)
        assert (y[0] - y[1]).abs().max() > 1e-3 * y.abs().max(), "degenerate: logits do not depend on the input"
        err = max(float((model(G.act_on_signal(x, g)) - y).abs().max()) for g in G.elements())
    return err / float(y.abs().max())


def test_registered_on_digits3d():
    for name in ("e4net3d", "gcnn3d", "cnn3d"):
        assert name in list_models() and model_spec(name).dataset == "digits3d"
        assert model_spec(name).input_shape == SHAPE
        assert create_model(name, num_classes=7)(torch.zeros(2, *SHAPE)).shape == (2, 7)
    assert (model_spec("e4net3d").group, model_spec("gcnn3d").group, model_spec("cnn3d").group) == ("O", "O", None)
    with pytest.raises(ValueError, match="voxel grids"):
        create_model("e4net3d", group="p4")


def test_twins_share_topology_and_width():
    e4, gc = create_model("e4net3d"), create_model("gcnn3d")
    kinds = [type(m).__name__ for m in e4.modules()]
    assert kinds.count("E4Conv") == 3 and [type(m).__name__ for m in gc.modules()].count("GroupConv") == 3
    e4_layers = [m for m in e4.modules() if isinstance(m, enn.E4Conv)]
    gc_layers = [m for m in gc.modules() if isinstance(m, enn.GroupConv)]
    for a, b in zip(e4_layers, gc_layers):
        assert (a.in_channels, a.out_channels, a.kernel_size, a.group) == (b.in_channels, b.out_channels, 3, O)
    counts = {n: e4net.count(create_model(n), SHAPE) for n in ("e4net3d", "gcnn3d", "cnn3d")}
    assert 0.8 < counts["cnn3d"].params / counts["e4net3d"].params < 1.25  # about the same parameters
    assert counts["gcnn3d"].macs > 10 * counts["e4net3d"].macs  # Sec. 4.2 in 3-D


@pytest.mark.parametrize(
    "name, G",
    [("e4net3d", O), ("gcnn3d", O), ("e4net3d", OH), pytest.param("gcnn3d", OH, marks=pytest.mark.slow)],
    ids=["e4net3d-O", "gcnn3d-O", "e4net3d-Oh", "gcnn3d-Oh"],
)
def test_logits_exactly_invariant(name, G):
    """Every element of O (all 48 of Oh with ``group="Oh"``), float64, small width (the full width: test_models.py)."""
    model = _randomized(create_model(name, fields=2, group=G.name), seed=1)
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert _invariance(model, G, x) < 1e-9


def test_plain_cnn_is_not_invariant():
    """The check can fail: the plain 3-D CNN changes its logits under the cube's rotations."""
    model = _randomized(create_model("cnn3d"), seed=1)
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert _invariance(model, O, x) > 1e-3
