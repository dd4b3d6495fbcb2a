"""e4net.groups O and Oh: group axioms over all triples, the action laws over all pairs (with hypothesis drawing the
tensors), and the conventions of the CubeGroup docstring (matrices, element order, centred coordinates)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e4net import groups
from e4net.groups import OH, CubeGroup, O

CUBE_GROUPS = [O, OH]


def _det(m):
    return round(torch.linalg.det(torch.tensor(m, dtype=torch.float64)).item())


def test_get_orders_and_matrices():
    assert groups.get("O") is O and groups.get("Oh") is OH and groups.resolve("Oh") is OH
    assert (O.order, OH.order, O.spatial_dims, OH.spatial_dims) == (24, 48, 3, 3)
    assert O.matrix(0) == ((1, 0, 0), (0, 1, 0), (0, 0, 1)) and O.element_name(0) == "e"
    mats = [OH.matrix(g) for g in OH.elements()]
    assert len(set(mats)) == 48  # all signed permutation matrices, each once
    assert all(_det(O.matrix(g)) == 1 for g in O.elements())  # O: the rotations
    assert all(OH.matrix(g) == O.matrix(g) for g in O.elements())  # O is the first half of Oh
    assert all(OH.matrix(g + 24) == tuple(tuple(-v for v in r) for r in O.matrix(g)) for g in O.elements())  # R (-I)
    assert all(OH.element_of_matrix(OH.matrix(g)) == g for g in OH.elements())
    with pytest.raises(ValueError, match="not a matrix of O"):
        O.element_of_matrix(((-1, 0, 0), (0, 1, 0), (0, 0, 1)))
    with pytest.raises(ValueError, match="not an element of O"):
        O.compose(0, 24)
    assert CubeGroup("O") == O


@pytest.mark.parametrize("G", CUBE_GROUPS, ids=str)
def test_group_axioms_exhaustive(G):
    els = G.elements()
    t = G.composition_table
    for a in els:
        assert t[0][a] == a == t[a][0]
        assert t[a][G.inverse(a)] == 0 == t[G.inverse(a)][a]
        assert sorted(t[a]) == els  # closure: rows are permutations
    for a, b, c in itertools.product(els, repeat=3):
        assert t[t[a][b]][c] == t[a][t[b][c]]
    # the law is the matrix product
    for a, b in itertools.product(els, repeat=2):
        ma, mb = torch.tensor(G.matrix(a)), torch.tensor(G.matrix(b))
        assert G.matrix(t[a][b]) == tuple(map(tuple, (ma @ mb).tolist()))


def test_o_is_not_abelian_and_has_the_classes_of_the_cube():
    # the orders of the 24 rotations: 1 identity, 9 of order 2 (3 face 180s + 6 edge 180s), 8 of order 3, 6 of order 4
    def order_of(g):
        x, n = g, 1
        while x != 0:
            x, n = O.compose(x, g), n + 1
        return n

    counts = {}
    for g in O.elements():
        counts[order_of(g)] = counts.get(order_of(g), 0) + 1
    assert counts == {1: 1, 2: 9, 3: 8, 4: 6}
    assert any(O.compose(a, b) != O.compose(b, a) for a, b in itertools.product(O.elements(), repeat=2))


@pytest.mark.parametrize("G", CUBE_GROUPS, ids=str)
def test_action_moves_voxels_by_the_matrix(G):
    """``(T_g f)(p) = f(M^-1 p)`` in centred coordinates: a single hot voxel at ``p`` moves to ``M p``."""
    shape = (5, 5, 5)
    centre = torch.tensor([2, 2, 2])
    p = torch.tensor([0, 1, 4])
    x = torch.zeros(shape)
    x[tuple(p)] = 1.0
    for g in G.elements():
        q = torch.tensor(G.matrix(g)) @ (p - centre) + centre
        y = G.act_on_signal(x, g)
        assert y[tuple(q)] == 1.0 and y.sum() == 1.0, G.element_name(g)


@settings(max_examples=10, deadline=None)
@given(
    gi=st.sampled_from([0, 1]),
    d=st.integers(1, 4),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_actions_obey_group_law_for_all_pairs(gi, d, h, w, seed):
    """Every pair ``(a, b)``: ``T_a T_b = T_{ab}`` on voxel signals ``(B, C, D, H, W)`` (any box: the elements that
    permute axes swap their lengths) and on group feature maps ``(B, C, |G|, D, H, W)``; ``T_e`` is the identity."""
    G = CUBE_GROUPS[gi]
    gen = torch.Generator().manual_seed(seed)
    sig = torch.randn(2, 2, d, h, w, generator=gen)
    feat = torch.randn(1, 2, G.order, d, d, d, generator=gen)
    assert torch.equal(G.act_on_signal(sig, 0), sig) and torch.equal(G.act_on_features(feat, 0), feat)
    once_sig = [G.act_on_signal(sig, b) for b in G.elements()]
    once_feat = [G.act_on_features(feat, b) for b in G.elements()]
    for a, b in itertools.product(G.elements(), repeat=2):
        ab = G.compose(a, b)
        assert torch.equal(G.act_on_signal(once_sig[b], a), once_sig[ab])
        assert torch.equal(G.act_on_features(once_feat[b], a), once_feat[ab])


@settings(max_examples=6, deadline=None)
@given(gi=st.sampled_from([0, 1]), k=st.integers(1, 5), over_group=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_table_is_the_action_for_all_pairs(gi, k, over_group, seed):
    """k x k x k kernels: ``t[..., table[a]]`` is ``T_a t`` and rows compose by the group law, for every pair."""
    G = CUBE_GROUPS[gi]
    shape = ((G.order,) if over_group else ()) + (k, k, k)
    t = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    table = G.relative_position_index(k, over_group)
    assert table.shape == (G.order, t[0].numel())
    act = G.act_on_features if over_group else G.act_on_signal
    flat = t.reshape(2, -1)
    for a in G.elements():
        assert torch.equal(flat[:, table[a]].view(t.shape), act(t, a))
    for a, b in itertools.product(G.elements(), repeat=2):
        assert torch.equal(table[b][table[a]], table[G.compose(a, b)])
    if k >= 2:  # faithful: distinct elements move a generic kernel differently
        assert len({tuple(row) for row in G.relative_position_index(k).tolist()}) == G.order


def test_input_checks():
    with pytest.raises(ValueError, match="at least 3 dims"):
        O.act_on_signal(torch.zeros(3, 3), 0)
    with pytest.raises(ValueError, match="group feature map"):
        OH.act_on_features(torch.zeros(1, 2, 24, 3, 3, 3), 1)  # Oh has 48 slots
    with pytest.raises(ValueError, match="unknown group 'T'"):
        groups.get("T")
