"""e4net.groups: the group axioms, the group law of every action, and the stated conventions."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from e4net import groups
from e4net.groups import P4, P4M, Group
from e4net.nn import GroupConv, LiftingConv

GROUPS = [P4, P4M]


def test_get_and_orders():
    assert groups.get("p4") is P4 and groups.get("p4m") is P4M
    assert (P4.name, P4.order, P4.elements()) == ("p4", 4, [0, 1, 2, 3])
    assert (P4M.name, P4M.order, P4M.elements()) == ("p4m", 8, list(range(8)))
    with pytest.raises(ValueError, match="^unknown group 'p6'; known groups: p4, p4m, O, Oh$"):
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
    # rotations count modulo 4 and mirrors modulo 2, as exponents do
    assert [P4M.element(i, j) for i, j in ((5, 0), (-1, 0), (1, 2), (2, 3), (-3, -1))] == [1, 3, 1, 6, 5]
    assert [P4M.element_name(g) for g in P4M.elements()] == ["e", "r1", "r2", "r3", "m", "r1m", "r2m", "r3m"]
    assert [P4M.decompose(g) for g in (0, 3, 4, 7)] == [(0, 0), (3, 0), (0, 1), (3, 1)]
    with pytest.raises(ValueError, match="not an element"):
        P4.compose(0, 4)


def test_rotation_is_counter_clockwise_as_displayed():
    x = torch.zeros(3, 3)
    x[0, 2] = 1.0  # top-right
    y = P4.act_on_signal(x, P4.element(1))
    assert y[0, 0] == 1.0  # a +90 degree CCW turn takes the top-right corner to the top-left
    z = P4M.act_on_signal(x, P4M.element(0, 1))
    assert z[0, 0] == 1.0  # the mirror flips the width axis


REGISTERED = list(groups.GROUPS.values())
PIXEL_GROUPS = [G for G in REGISTERED if G.spatial_dims == 2]  # the cube groups' laws: tests/test_groups_3d.py


@pytest.mark.parametrize("G", PIXEL_GROUPS, ids=str)
@pytest.mark.parametrize("h, w", [(1, 1), (3, 3), (4, 4), (2, 5), (6, 3)])
def test_actions_obey_group_law_for_all_pairs(G, h, w):
    """``T_a T_b = T_(ab)`` on images and on group feature maps, for every pair of elements of every registered
    group (odd, even and non-square grids), and ``T_e`` is the identity."""
    gen = torch.Generator().manual_seed(h * 7 + w)
    img = torch.randn(2, 3, h, w, generator=gen)
    feat = torch.randn(2, 3, G.order, h, w, generator=gen)
    assert torch.equal(G.act_on_signal(img, 0), img) and torch.equal(G.act_on_features(feat, 0), feat)
    signal = {g: G.act_on_signal(img, g) for g in G.elements()}
    features = {g: G.act_on_features(feat, g) for g in G.elements()}
    for a, b in itertools.product(G.elements(), repeat=2):
        ab = G.compose(a, b)
        assert torch.equal(G.act_on_signal(signal[b], a), signal[ab]), (G.name, a, b)
        assert torch.equal(G.act_on_features(features[b], a), features[ab]), (G.name, a, b)


@pytest.mark.parametrize("G", PIXEL_GROUPS, ids=str)
def test_group_law_matches_the_stated_formula_for_all_pairs(G):
    """``(r^a m^b)(r^c m^d) = r^(a + (-1)^b c) m^(b + d)`` (the module docstring) for every pair, and the products
    are distinct transformations of a generic image (the action is faithful)."""
    img = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    images = {}
    for x, y in itertools.product(G.elements(), repeat=2):
        (i, j), (k, m) = G.decompose(x), G.decompose(y)
        assert G.compose(x, y) == G.element(i + (-1) ** j * k, j + m), (G.name, x, y)
        assert G.composition_table[x][y] == G.compose(x, y)
    for g in G.elements():
        images[g] = G.act_on_signal(img, g)
        assert G.element(*G.decompose(g)) == g
    assert len({tuple(t.flatten().tolist()) for t in images.values()}) == G.order


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
    table = G.relative_position_index(k)
    for g in G.elements():
        assert torch.equal(kern.reshape(2, -1)[:, table[g]].view(2, k, k), G.act_on_signal(kern, g))


@pytest.mark.parametrize("G", GROUPS, ids=str)
def test_filter_banks_use_the_actions(G):
    """The filters of LiftingConv / GroupConv (Eq. 5) are the kernels transformed by every element, stacked."""
    lift = LiftingConv(2, 3, 5, G)
    conv = GroupConv(2, 3, 3, G)
    w, wg = lift.weight.detach(), conv.weight.detach()
    bank = lift.filter_bank().detach().view(3, G.order, 2, 5, 5)
    gbank = conv.filter_bank().detach().view(3, G.order, 2, G.order, 3, 3)
    for g in G.elements():
        assert torch.equal(bank[:, g], G.act_on_signal(w, g))
        assert torch.equal(gbank[:, g], G.act_on_features(wg, g))


def test_bad_feature_map_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, H, W\)"):
        P4.act_on_features(torch.zeros(1, 2, 8, 3, 3), 1)
    with pytest.raises(ValueError, match="at least 2 dims"):
        P4.act_on_signal(torch.zeros(3), 1)


# ---- the Group contract ---------------------------------------------------------------------------------------------


class CubeRotations(Group):
    """The rotation group O of the cube (24 signed permutation matrices, det +1) on voxel grids ``(..., D, H, W)``.

    A test of the contract only: it implements just the abstract members and must get everything else (checks,
    inverse, regular action, relative-position table) from :class:`Group`.
    """

    name = "O"

    def __init__(self) -> None:
        mats = []
        for perm in itertools.permutations(range(3)):
            for signs in itertools.product((1, -1), repeat=3):
                m = torch.zeros(3, 3, dtype=torch.long)
                m[range(3), perm] = torch.tensor(signs)
                if round(torch.linalg.det(m.double()).item()) == 1:
                    mats.append((perm, signs, m))
        mats.sort(key=lambda t: not torch.equal(t[2], torch.eye(3, dtype=torch.long)))  # identity first
        self.mats = mats

    @property
    def order(self) -> int:
        return len(self.mats)

    @property
    def spatial_dims(self) -> int:
        return 3

    def _compose(self, a: int, b: int) -> int:
        m = self.mats[a][2] @ self.mats[b][2]
        return next(i for i, t in enumerate(self.mats) if torch.equal(t[2], m))

    def _act_on_signal(self, x: torch.Tensor, g: int) -> torch.Tensor:
        # (T_g f)(p) = f(M^T p) about the grid centre: output axis i reads input axis perm[i], negated if signs[i] < 0
        perm, signs, _ = self.mats[g]
        base = x.dim() - 3
        y = x.permute(*range(base), *(base + p for p in perm))
        flips = tuple(base + i for i in range(3) if signs[i] < 0)
        return torch.flip(y, flips) if flips else y


CUBE = CubeRotations()
ALL = [P4, P4M, CUBE]


def test_group_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        Group()
    # the abstract members are exactly what a new group implements; everything else is derived
    assert Group.__abstractmethods__ == {"order", "spatial_dims", "_compose", "_act_on_signal"}
    for missing in Group.__abstractmethods__:
        members = {m: getattr(CubeRotations, m) for m in Group.__abstractmethods__ if m != missing}
        with pytest.raises(TypeError, match=missing):
            type("Partial", (Group,), members)()
    assert (CUBE.order, CUBE.spatial_dims, str(CUBE)) == (24, 3, "O")
    assert isinstance(P4, Group) and groups.resolve(CUBE) is CUBE


def test_square_group_has_no_rotation_order_to_get_wrong():
    """Only 90-degree rotations act exactly on the pixel grid: a C8 that acts like C4 cannot be built."""
    with pytest.raises(TypeError):
        groups.SquareGroup("c8", rotations=8)
    assert groups.SquareGroup("p4", reflections=False) == P4 and groups.SquareGroup("p4m", True) == P4M
    assert (P4.spatial_dims, P4M.spatial_dims) == (2, 2)
    for G in (P4, P4M):  # the action is faithful: distinct elements move a generic kernel differently
        rows = {tuple(row) for row in G.relative_position_index(3).tolist()}
        assert len(rows) == G.order


@pytest.mark.parametrize("g", ALL, ids=str)
def test_contract_group_axioms_for_all_pairs_and_triples(g):
    """Identity, inverses, closure, the table and the regular permutation for every pair; associativity for every
    triple (24^3 products for the cube group: the composition table makes that cheap)."""
    els = g.elements()
    assert els == list(range(g.order))
    table = g.composition_table
    for a in els:
        assert g.compose(0, a) == a == g.compose(a, 0)
        assert g.compose(a, g.inverse(a)) == 0 == g.compose(g.inverse(a), a)
        assert sorted(table[a]) == els and sorted(row[a] for row in table) == els  # a Latin square
        assert g.regular_permutation(a) == [g.compose(g.inverse(a), x) for x in els]
        with pytest.raises(ValueError, match="not an element"):
            g.compose(a, g.order)
    for a, b in itertools.product(els, repeat=2):
        assert table[a][b] == g.compose(a, b) == g._compose(a, b), (a, b)
    for a, b, c in itertools.product(els, repeat=3):
        assert table[table[a][b]][c] == table[a][table[b][c]], (a, b, c)


@given(
    g=st.sampled_from(ALL),
    a=st.integers(0, 23),
    b=st.integers(0, 23),
    k=st.integers(1, 4),
    over_group=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_contract_relative_position_index_is_the_action(g, a, b, k, over_group, seed):
    """``t[..., table[a]]`` is ``T_a t`` for every element, built from the group's own actions only."""
    a, b = a % g.order, b % g.order
    grid = (k,) * g.spatial_dims
    shape = ((g.order,) if over_group else ()) + grid
    t = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    table = g.relative_position_index(k, over_group)
    assert table.dtype == torch.long and table.shape == (g.order, t[0].numel())
    act = g.act_on_features if over_group else g.act_on_signal
    assert torch.equal(t.reshape(2, -1)[:, table[a]].view(t.shape), act(t, a))
    # the actions obey the group law, so the table does: row (a b) = row b gathered with row a
    assert torch.equal(table[b][table[a]], table[g.compose(a, b)])
    table[a] = 0  # a fresh copy: the cached table is untouched
    assert torch.equal(g.relative_position_index(k, over_group)[0], torch.arange(t[0].numel()))


@pytest.mark.parametrize("g", ALL, ids=str)
@pytest.mark.parametrize("over_group", [False, True], ids=["omega", "omega-x-A"])
def test_contract_relative_position_tables_compose_for_all_pairs(g, over_group):
    """Row ``ab`` of the relative-position table is row ``b`` gathered with row ``a``, for every pair and k = 1..4."""
    for k in range(1, 5):
        table = g.relative_position_index(k, over_group)
        for a, b in itertools.product(g.elements(), repeat=2):
            assert torch.equal(table[b][table[a]], table[g.compose(a, b)]), (g.name, k, a, b)


@pytest.mark.parametrize("G", REGISTERED, ids=str)
def test_elements_are_checked_exactly(G):
    """Only ints 0..|A|-1 are elements: not bools, floats, negatives or |A|; the message states the range."""
    last = G.order - 1
    for bad in (True, False, 1.0, -1, G.order, "1"):
        for call in (lambda g: G.compose(g, 0), lambda g: G.compose(0, g), G.inverse, lambda g: G.act_on_signal(
                torch.zeros(2, 2), g)):  # fmt: skip
            with pytest.raises(
                ValueError, match=rf"^{bad!r} is not an element of {G.name} \(expected an int in 0\.\.{last}\)$"
            ):
                call(bad)


def test_action_input_errors_name_the_shape():
    with pytest.raises(ValueError, match=r"at least 2 dims \(the grid of p4\), got shape \(3,\)$"):
        P4.act_on_signal(torch.zeros(3), 0)
    with pytest.raises(ValueError, match=r"at least 2 dims \(the grid of p4\), got shape list$"):
        P4.act_on_signal([[1.0]], 0)
    with pytest.raises(
        ValueError, match=r"group feature map \(\.\.\., 8, H, W\) for p4m, got shape \(1, 2, 4, 3, 3\)$"
    ):
        P4M.act_on_features(torch.zeros(1, 2, 4, 3, 3), 1)
    with pytest.raises(ValueError, match=r"for p4, got shape \(3, 3\)$"):
        P4.act_on_features(torch.zeros(3, 3), 1)  # too few dims for a group axis
    with pytest.raises(ValueError, match=r"for p4, got shape list$"):
        P4.act_on_features([[[1.0]]], 1)


def test_contract_input_checks():
    with pytest.raises(ValueError, match="at least 3 dims"):
        CUBE.act_on_signal(torch.zeros(3, 3), 0)
    with pytest.raises(ValueError, match="not an element"):
        CUBE.act_on_signal(torch.zeros(3, 3, 3), 24)
    with pytest.raises(ValueError, match="group feature map"):
        CUBE.act_on_features(torch.zeros(2, 4, 3, 3, 3), 1)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="kernel_size must be a positive int"):
            P4.relative_position_index(bad)
