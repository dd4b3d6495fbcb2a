"""e4net.groups: the group axioms, the group law of every action, and the stated conventions."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from e4net import groups
from e4net.groups import P4, P4M

GROUPS = [P4, P4M]


def test_get_and_orders():
    assert groups.get("p4") is P4 and groups.get("p4m") is P4M
    assert (P4.name, P4.order, P4.elements()) == ("p4", 4, [0, 1, 2, 3])
    assert (P4M.name, P4M.order, P4M.elements()) == ("p4m", 8, list(range(8)))
    with pytest.raises(ValueError, match="unknown group 'p6'"):
        groups.get("p6")


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_group_axioms(G):
    els = G.elements()
    for a in els:
        assert G.compose(0, a) == a == G.compose(a, 0)
        assert G.compose(a, G.inverse(a)) == 0 == G.compose(G.inverse(a), a)
    for a, b, c in itertools.product(els, repeat=3):
        assert G.compose(G.compose(a, b), c) == G.compose(a, G.compose(b, c))
    # closure: each row of the table is a permutation
    for a in els:
        assert sorted(G.compose(a, b) for b in els) == els


def test_p4m_relations():
    r, m = P4M.element(1), P4M.element(0, 1)
    assert P4M.compose(m, P4M.compose(r, m)) == P4M.inverse(r)  # m r m = r^-1
    assert P4M.inverse(m) == m
    assert P4M.compose(r, m) == P4M.element(1, 1)  # index 4*j + i is r^i m^j
    with pytest.raises(ValueError, match="no reflections"):
        P4.element(0, 1)
    with pytest.raises(ValueError, match="not an element"):
        P4.compose(0, 4)


def test_rotation_is_counter_clockwise_as_displayed():
    x = torch.zeros(3, 3)
    x[0, 2] = 1.0  # top-right
    y = P4.act_on_signal(x, P4.element(1))
    assert y[0, 0] == 1.0  # a +90 degree CCW turn takes the top-right corner to the top-left
    z = P4M.act_on_signal(x, P4M.element(0, 1))
    assert z[0, 0] == 1.0  # the mirror flips the width axis


@given(
    gi=st.sampled_from([0, 1]),
    a=st.integers(0, 7),
    b=st.integers(0, 7),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_actions_obey_group_law(gi, a, b, h, w, seed):
    G = GROUPS[gi]
    a, b = a % G.order, b % G.order
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(2, 3, h, w, generator=gen)
    feat = torch.randn(2, 3, G.order, h, w, generator=gen)
    ab = G.compose(a, b)
    assert torch.equal(G.act_on_signal(G.act_on_signal(img, b), a), G.act_on_signal(img, ab))
    assert torch.equal(G.act_on_features(G.act_on_features(feat, b), a), G.act_on_features(feat, ab))
    assert torch.equal(G.act_on_features(feat, 0), feat)


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_regular_action_moves_group_axis(G):
    # A feature map that is constant in space and equal to the slot index: T_g f(a) = f(g^-1 a).
    f = torch.arange(G.order, dtype=torch.float32).view(1, 1, G.order, 1, 1).expand(1, 1, G.order, 3, 3)
    for g in G.elements():
        out = G.act_on_features(f, g)[0, 0, :, 0, 0]
        assert out.tolist() == [float(G.compose(G.inverse(g), a)) for a in G.elements()]


@pytest.mark.parametrize("G", GROUPS, ids=str)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_kernel_permutation_is_the_image_action(G, k):
    kern = torch.randn(2, k, k)
    table = G.kernel_permutation(k)
    for g in G.elements():
        assert torch.equal(kern.reshape(2, -1)[:, table[g]].view(2, k, k), G.act_on_signal(kern, g))


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_filter_banks_use_the_actions(G):
    w = torch.randn(3, 2, 5, 5)
    bank = G.image_filter_bank(w)
    wg = torch.randn(3, 2, G.order, 3, 3)
    gbank = G.group_filter_bank(wg)
    for g in G.elements():
        assert torch.equal(bank[:, g], G.act_on_signal(w, g))
        assert torch.equal(gbank[:, g], G.act_on_features(wg, g))


def test_bad_feature_map_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, H, W\)"):
        P4.act_on_features(torch.zeros(1, 2, 8, 3, 3), 1)
    with pytest.raises(ValueError, match="at least 2 dims"):
        P4.act_on_signal(torch.zeros(3), 1)
