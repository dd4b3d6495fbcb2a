"""``e4net.analysis.invariance``: the largest change of a predicted probability over the group's transformations
of the inputs is round-off for an invariant model and large for a model that is not invariant."""

from __future__ import annotations

import pytest
import torch
from _tiny_models import TinyPlain
from torch import nn

from e4net.analysis import invariance_error, max_invariance_error
from e4net.groups import P4M


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_invariant_model_gives_round_off(images):
    torch.manual_seed(0)
    model = TinyPlain(norm=True)  # p4 lifting conv, group batch norm, pooling over the group: p4-invariant
    err = invariance_error(model, images, "p4", batch_size=5)
    assert set(err) == {"e", "r1", "r2", "r3"} and err["e"] == 0.0
    assert max(err.values()) < 1e-5 and max_invariance_error(model, images, "p4") == max(err.values())
    assert not model.training  # measured in eval mode


def test_non_invariant_model_gives_a_large_value(images):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    err = invariance_error(plain, images, "p4")
    assert err["e"] == 0.0 and min(err[k] for k in ("r1", "r2", "r3")) > 0.05


def test_p4_model_is_not_invariant_to_the_mirrors_of_p4m(images):
    torch.manual_seed(0)
    err = invariance_error(TinyPlain(), images, P4M)
    assert len(err) == 8
    rotations = [P4M.element_name(g) for g in P4M.elements() if g < 4]
    mirrors = [P4M.element_name(g) for g in P4M.elements() if g >= 4]
    assert max(err[k] for k in rotations) < 1e-5
    assert min(err[k] for k in mirrors) > 1e-4
