"""The aggregation interface (Eq. 9) and its attention instances: exact equivariance, invariance, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import e4net
from e4net.groups import P4, P4M, Group
from e4net.models import create_model, list_models, model_spec
from e4net.nn import E4Conv, GroupBatchNorm, GroupConv, LiftingConv
from e4net.nn.aggregation import GroupAggregation, gather_relative
from e4net.nn.attentive_conv import AttentiveGroupConv, AttentiveLiftingConv
from e4net.nn.self_attention import GroupSelfAttention, LiftingSelfAttention

GROUPS = [P4, P4M]


def randomize(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Random values for every parameter and every floating buffer (BN running statistics included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


def act(group: Group, x: torch.Tensor, g: int) -> torch.Tensor:
    return group.act_on_signal(x, g) if x.dim() == 4 else group.act_on_features(x, g)


def equivariance_error(layer: nn.Module, x: torch.Tensor, group: Group) -> float:
    """max over all g of |layer(T_g x) - T_g layer(x)|, relative to the output's size."""
    with torch.no_grad():
        y = layer(x)
        err = max((layer(act(group, x, g)) - group.act_on_features(y, g)).abs().max().item() for g in group.elements())
    return err / (1.0 + y.abs().max().item())


def make_layers(group: Group, cin: int, cout: int) -> list[tuple[nn.Module, bool]]:
    """(layer, lifting) pairs covering every attention variant."""
    return [
        (GroupSelfAttention(cin, cout, 3, group, heads=2, head_channels=3, over_group=True), False),
        (GroupSelfAttention(cin, cout, 3, group, heads=2, head_channels=4, over_group=False), False),
        (GroupSelfAttention(cin, cout, 5, group, heads=1, head_channels=3, positional="full"), False),
        (GroupSelfAttention(cin, cout, 3, group, heads=2, head_channels=4, query_slots="all"), False),
        (
            GroupSelfAttention(cin, cout, 3, group, heads=1, head_channels=2, query_slots="all", positional="full"),
            False,
        ),
        (LiftingSelfAttention(cin, cout, 3, group, heads=2, head_channels=3), True),
        (AttentiveGroupConv(cin, cout, 3, group, attention_kernel_size=3), False),
        (AttentiveGroupConv(cin, cout, 3, group, padding="valid", channel_attention=False), False),
        (AttentiveGroupConv(cin, cout, 2, group, padding="valid", spatial_attention=False), False),
        (AttentiveLiftingConv(cin, cout, 3, group, reduction=1), True),
        (AttentiveLiftingConv(cin, cout, 4, group, padding="valid"), True),
    ]


# ---- exact equivariance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS, ids=str)
@pytest.mark.parametrize("size", [4, 5])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_every_layer_is_exactly_equivariant(group: Group, size: int, train: bool) -> None:
    for i, (layer, lifting) in enumerate(make_layers(group, 2, 3)):
        layer = randomize(layer, seed=i).double().train(train)
        shape = (2, 2, size, size) if lifting else (2, 2, group.order, size, size)
        x = torch.randn(shape, dtype=torch.float64)
        assert equivariance_error(layer, x, group) < 1e-12, layer


@given(
    group=st.sampled_from(GROUPS),
    batch=st.integers(1, 2),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    size=st.integers(3, 6),
    k=st.sampled_from([1, 3, 5]),
    heads=st.integers(1, 3),
    d=st.integers(1, 4),
    over_group=st.booleans(),
    positional=st.sampled_from(["factorized", "full"]),
    query_slots=st.sampled_from(["own", "all"]),
    lifting=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_self_attention_equivariance_property(
    group, batch, cin, cout, size, k, heads, d, over_group, positional, query_slots, lifting, seed
) -> None:
    torch.manual_seed(seed)
    if lifting:
        layer = LiftingSelfAttention(cin, cout, k, group, heads, d, positional=positional)
        x = torch.randn(batch, cin, size, size, dtype=torch.float64)
    else:
        if query_slots == "all":
            over_group = True
        layer = GroupSelfAttention(cin, cout, k, group, heads, d, over_group, positional, query_slots)
        x = torch.randn(batch, cin, group.order, size, size, dtype=torch.float64)
    layer = randomize(layer, seed).double()
    assert equivariance_error(layer, x, group) < 1e-12


@given(
    group=st.sampled_from(GROUPS),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    size=st.integers(4, 6),
    k=st.integers(1, 4),
    valid=st.booleans(),
    channel=st.booleans(),
    spatial=st.booleans(),
    reduction=st.integers(1, 3),
    lifting=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_attentive_conv_equivariance_property(
    group, cin, cout, size, k, valid, channel, spatial, reduction, lifting, seed
) -> None:
    if not valid and k % 2 == 0:
        k += 1
    cls = AttentiveLiftingConv if lifting else AttentiveGroupConv
    layer = cls(cin, cout, k, group, "valid" if valid else "same", channel, spatial, reduction, 3, bias=True)
    layer = randomize(layer, seed).double()
    shape = (2, cin, size, size) if lifting else (2, cin, group.order, size, size)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    assert equivariance_error(layer, x, group) < 1e-12


def test_float32_equivariance_is_within_round_off() -> None:
    layer = randomize(GroupSelfAttention(4, 4, 5, P4M, heads=3, head_channels=4))
    assert equivariance_error(layer, torch.randn(2, 4, 8, 9, 9), P4M) < 1e-5


# ---- the aggregation interface ------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS, ids=str)
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_relative_index_is_the_group_action(group: Group, k: int) -> None:
    spatial = group.relative_position_index(k, over_group=False)
    grid = torch.arange(k * k).view(k, k)
    assert torch.equal(spatial, torch.stack([group.act_on_signal(grid, a).reshape(-1) for a in group.elements()]))
    full = group.relative_position_index(k, over_group=True)
    assert full.shape == (group.order, group.order * k * k)
    w = torch.randn(3, 2, group.order, k, k)
    bank = gather_relative(w.flatten(-3), full).view(3, 2, group.order, group.order, k, k).transpose(1, 2)
    assert torch.equal(bank, torch.stack([group.act_on_features(w, a) for a in group.elements()], dim=1))
    # every row is a permutation; slot e is the identity
    assert torch.equal(full[0], torch.arange(group.order * k * k))
    assert all(torch.equal(row.sort().values, torch.arange(row.numel())) for row in full)


def test_existing_layers_are_instances_of_the_interface() -> None:
    for layer in (
        LiftingConv(1, 2, 3, P4),
        GroupConv(2, 2, 3, P4),
        E4Conv(2, 2, 3, P4),
        GroupSelfAttention(2, 2, 3, P4),
        LiftingSelfAttention(1, 2, 3, P4),
        AttentiveGroupConv(2, 2, 3, P4),
        AttentiveLiftingConv(1, 2, 3, P4),
    ):
        assert isinstance(layer, GroupAggregation)
    assert GroupConv(2, 2, 3, P4M).neighbourhood_size() == 8 * 9
    assert LiftingConv(2, 2, 3, P4M).neighbourhood_size() == 9
    assert E4Conv(2, 2, 5, P4M).neighbourhood_size() == 25
    assert GroupSelfAttention(2, 2, 3, P4M, over_group=False).neighbourhood_size() == 9


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_attentive_conv_without_attention_is_the_group_conv(group: Group) -> None:
    agc = randomize(AttentiveGroupConv(3, 4, 3, group, channel_attention=False, spatial_attention=False)).double()
    gc = GroupConv(3, 4, 3, group).double()
    gc.weight.data.copy_(agc.weight.data)
    x = torch.randn(2, 3, group.order, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(agc(x), gc(x))
    alc = randomize(AttentiveLiftingConv(2, 4, 3, group, channel_attention=False, spatial_attention=False)).double()
    lc = LiftingConv(2, 4, 3, group).double()
    lc.weight.data.copy_(alc.weight.data[:, :, 0])
    xi = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(alc(xi), lc(xi))


def test_attention_actually_modulates() -> None:
    agc = randomize(AttentiveGroupConv(3, 4, 3, P4)).double()
    plain = AttentiveGroupConv(3, 4, 3, P4, channel_attention=False, spatial_attention=False).double()
    plain.weight.data.copy_(agc.weight.data)
    x = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64)
    assert (agc(x) - plain(x)).abs().max() > 1e-3


def test_self_attention_reference_values() -> None:
    """A 1 x 1 window attends to itself only: the output is out(value(x)) whatever q, k and P are."""
    layer = randomize(GroupSelfAttention(3, 2, 1, P4, heads=2, head_channels=2, over_group=False)).double()
    x = torch.randn(2, 3, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.out(layer.value(x)))
    # A brute-force evaluation of Eq. 6 at one output element (x = (1, 2), slot a = 1) of a 3 x 3, over-group layer.
    layer = randomize(GroupSelfAttention(2, 3, 3, P4, heads=1, head_channels=3, over_group=True), seed=3).double()
    x = torch.randn(1, 2, 4, 4, 5, dtype=torch.float64)
    q, k, v = layer.query(x)[0], layer.key(x)[0], layer.value(x)[0]  # (d, |A|, H, W)
    pe = layer.positional_encoding().view(3, 4, 3, 3)  # P on N(e) = A x Omega
    a, row, col = 1, 1, 2
    scores, vals = [], []
    for b in range(4):
        for du in (-1, 0, 1):
            for dv in (-1, 0, 1):
                y, z = row + du, col + dv
                if not (0 <= y < 4 and 0 <= z < 5):
                    continue
                # relative position (a^-1 (y - x), a^-1 b): rotate the offset grid / group index back by a
                offset = torch.zeros(4, 3, 3, dtype=torch.long)
                offset[b, du + 1, dv + 1] = 1
                rel = P4.act_on_features(offset, P4.inverse(a)).nonzero()[0]
                p = pe[:, rel[0], rel[1], rel[2]]
                scores.append(q[:, a, row, col] @ (k[:, b, y, z] + p) / 3**0.5)
                vals.append(v[:, b, y, z])
    w = torch.softmax(torch.stack(scores), 0)
    expected = layer.out.weight @ (w[:, None] * torch.stack(vals)).sum(0) + layer.out.bias
    torch.testing.assert_close(layer(x)[0, :, a, row, col], expected)


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_self_attention_all_query_slots_reference_values(group: Group) -> None:
    """query_slots="all" (the GSA-Nets code): output slot v sums, over the query slots g of its pixel, a softmax
    over (m, u) of q(x, g).(k(x + u, m) + P(v^-1 g, v^-1 m, v^-1 u)) weighting v(x + u, m). Brute force at one element."""
    n = group.order
    layer = GroupSelfAttention(2, 3, 3, group, heads=1, head_channels=2, query_slots="all", positional="full")
    layer = randomize(layer, seed=5).double()
    x = torch.randn(1, 2, n, 4, 5, dtype=torch.float64)
    q, k, v = layer.query(x)[0], layer.key(x)[0], layer.value(x)[0]
    pe = layer.pos  # (d, query slot, key slot, k, k) in the frame of the identity
    out_slot, row, col = n - 1, 2, 1
    vinv = group.inverse(out_slot)
    total = torch.zeros(2, dtype=torch.float64)
    for g in range(n):
        scores, vals = [], []
        for m in range(n):
            for du in (-1, 0, 1):
                for dv in (-1, 0, 1):
                    y, z = row + du, col + dv
                    if not (0 <= y < 4 and 0 <= z < 5):
                        continue
                    onehot = torch.zeros(n, 3, 3, dtype=torch.long)
                    onehot[m, du + 1, dv + 1] = 1
                    rel = group.act_on_features(onehot, vinv).nonzero()[0]  # v^-1 (m, u)
                    p = pe[:, group.compose(vinv, g), rel[0], rel[1], rel[2]]
                    scores.append(q[:, g, row, col] @ (k[:, m, y, z] + p) / 2**0.5)
                    vals.append(v[:, m, y, z])
        total += (torch.softmax(torch.stack(scores), 0)[:, None] * torch.stack(vals)).sum(0)
    expected = layer.out.weight @ total + layer.out.bias
    torch.testing.assert_close(layer(x)[0, :, out_slot, row, col], expected)


# ---- the planted bug: the relative-position table is the one place equivariance comes from ------------------------


def test_planted_bug_untransformed_relative_positions_break_equivariance(monkeypatch: pytest.MonkeyPatch) -> None:
    def identity_table(group: Group, kernel_size: int, over_group: bool = False) -> torch.Tensor:
        n = (group.order if over_group else 1) * kernel_size * kernel_size
        return torch.arange(n).repeat(group.order, 1)  # every slot sees the untransformed tensor

    monkeypatch.setattr(type(P4), "relative_position_index", identity_table)
    torch.manual_seed(0)
    broken = [
        (LiftingConv(2, 3, 3, P4), True),
        (GroupConv(2, 3, 3, P4), False),
        (E4Conv(2, 4, 3, P4), False),
        (GroupSelfAttention(2, 3, 3, P4, heads=2, head_channels=3), False),
        (GroupSelfAttention(2, 3, 3, P4, heads=2, head_channels=3, query_slots="all"), False),
        (LiftingSelfAttention(2, 3, 3, P4, heads=2, head_channels=3), True),
        (AttentiveGroupConv(2, 3, 3, P4, channel_attention=False), False),
    ]
    for layer, lifting in broken:
        layer = randomize(layer).double().eval()
        x = torch.randn((2, 2, 7, 7) if lifting else (2, 2, 4, 7, 7), dtype=torch.float64)
        assert equivariance_error(layer, x, P4) > 1e-3, type(layer).__name__
    # the channel attention's MLP indexes the relative group element through the same table
    layer = randomize(AttentiveGroupConv(2, 3, 1, P4, spatial_attention=False)).double()
    with torch.no_grad():  # isolate alpha_C: same conv weight for every relative position
        layer.weight.copy_(layer.weight[:, :, :1].expand_as(layer.weight))
    assert equivariance_error(layer, torch.randn(2, 2, 4, 7, 7, dtype=torch.float64), P4) > 1e-4


# ---- models --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p4-sa", "alpha-p4cnn"])
def test_models_are_invariant(name: str) -> None:
    """Eval mode, registered (full-width) configuration: the logits of all rotations of an image (one batch) agree
    to float32 round-off. (tests/test_models.py checks float64 invariance of every registered model too.)"""
    model = randomize(create_model(name), seed=1, scale=0.3).eval()
    x = torch.randn(1, *model_spec(name).input_shape)
    batch = torch.cat([P4.act_on_signal(x, g) for g in P4.elements()])
    with torch.no_grad():
        y = model(batch)
    assert y.shape == (4, 10)
    torch.testing.assert_close(y, y[:1].expand_as(y), rtol=1e-4, atol=1e-4 * y.abs().max().item())
    assert y.std(1).min() > 1e-3  # not a constant function


def test_p4_sa_is_invariant_in_train_mode_too() -> None:
    """BN with batch statistics (over group and space) keeps the GSA-Net invariant on a fixed batch."""
    model = randomize(create_model("p4-sa", kernel_size=3, heads=2), seed=2, scale=0.3).train()
    x = torch.randn(2, 1, 28, 28)
    y = model(x)
    torch.testing.assert_close(model(P4.act_on_signal(x, 1)), y, rtol=1e-4, atol=1e-4 * y.abs().max().item())


def test_models_are_registered_with_table1_rows_and_counted() -> None:
    from e4net.paper import rows_for_model

    assert {"p4-sa", "alpha-p4cnn"} <= set(list_models())
    for name, label in (("p4-sa", "p4-SA"), ("alpha-p4cnn", "α-p4-CNN")):
        spec, paper = model_spec(name), next(iter(rows_for_model(name, {})), None)
        assert paper is not None and paper.table == "table1" and paper.label == label
        c = e4net.count(create_model(name), spec.input_shape)
        assert abs(c.params / paper.params - 1) < 0.05, (name, c.params)
        assert abs(c.macs / paper.macs - 1) < 0.05, (name, c.macs)
    assert e4net.count(create_model("alpha-p4cnn"), (1, 28, 28)).params == 73130


def test_self_attention_macs_formula() -> None:
    layer = GroupSelfAttention(4, 6, 3, P4M, heads=2, head_channels=5)
    c = e4net.count(layer, (4, 8, 7, 7))
    own = c.by_module[""] if "" in c.by_module else c.by_module["GroupSelfAttention"]
    assert own == 8 * 49 * 2 * (8 * 9) * 5 * 3  # |A| H W heads |N(e)| d (q.k + q.P + weights.v)
    assert c.macs == own + 3 * (8 * 49 * 10 * 4) + 8 * 49 * 6 * 10  # + q, k, v, out 1 x 1 maps
    layer = GroupSelfAttention(4, 6, 3, P4, heads=2, head_channels=5, query_slots="all")
    own = e4net.count(layer, (4, 4, 7, 7)).by_module["GroupSelfAttention"]
    assert own == 49 * 2 * (4 * 9) * 5 * (4 + 16 + 4)  # q.k per query slot, q.P per slot pair, weights.v


# ---- gradients -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: GroupSelfAttention(1, 2, 3, P4, heads=2, head_channels=2), (1, 1, 4, 2, 3)),
        (lambda: GroupSelfAttention(1, 1, 3, P4M, heads=1, head_channels=3, over_group=False), (1, 1, 8, 2, 2)),
        (lambda: LiftingSelfAttention(2, 2, 3, P4, heads=2, head_channels=2), (1, 2, 3, 3)),
        (lambda: GroupSelfAttention(1, 1, 3, P4, heads=1, head_channels=2, query_slots="all"), (1, 1, 4, 2, 2)),
        (lambda: AttentiveGroupConv(1, 2, 3, P4, attention_kernel_size=3), (1, 1, 4, 2, 2)),
        (
            lambda: AttentiveLiftingConv(1, 2, 2, P4, padding="valid", reduction=1, attention_kernel_size=3),
            (1, 1, 3, 3),
        ),
    ],
)
def test_gradcheck_float64(make, shape) -> None:
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    params = tuple(p for p in layer.parameters())

    def fn(x, *ps):
        return torch.func.functional_call(layer, {n: p for (n, _), p in zip(layer.named_parameters(), ps)}, (x,))

    assert torch.autograd.gradcheck(fn, (x, *[p.detach().clone().requires_grad_(True) for p in params]))
    del params


# ---- bad input -----------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors() -> None:
    gsa = GroupSelfAttention(3, 4, 3, P4)
    with pytest.raises(ValueError, match="rank 5"):
        gsa(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="expected 3 fields"):
        gsa(torch.randn(2, 2, 4, 5, 5))
    with pytest.raises(ValueError, match="group axis"):
        gsa(torch.randn(2, 3, 8, 5, 5))
    with pytest.raises(ValueError, match="rank 4"):
        LiftingSelfAttention(1, 4, 3, P4)(torch.randn(2, 1, 4, 5, 5))
    with pytest.raises(ValueError, match="kernel_size"):
        GroupSelfAttention(3, 4, 4, P4)
    with pytest.raises(ValueError, match="heads"):
        GroupSelfAttention(3, 4, 3, P4, heads=0)
    with pytest.raises(ValueError, match="query_slots"):
        GroupSelfAttention(3, 4, 3, P4, query_slots="mine")
    with pytest.raises(ValueError, match="over_group=True"):
        GroupSelfAttention(3, 4, 3, P4, over_group=False, query_slots="all")
    with pytest.raises(ValueError, match="positional"):
        GroupSelfAttention(3, 4, 3, P4, positional="sinusoidal")
    with pytest.raises(ValueError, match="unknown group"):
        GroupSelfAttention(3, 4, 3, "p6")
    with pytest.raises(ValueError, match="padding"):
        AttentiveGroupConv(3, 4, 3, P4, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        AttentiveGroupConv(3, 4, 4, P4)  # even kernel with 'same' padding is not exact
    with pytest.raises(ValueError, match="smaller than"):
        AttentiveGroupConv(3, 4, 5, P4, padding="valid")(torch.randn(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="kernel_size"):
        P4.relative_position_index(0, True)
    with pytest.raises(ValueError, match="enumerate"):
        gather_relative(torch.randn(3, 5), P4.relative_position_index(3, False))
    with pytest.raises(ValueError, match="crops"):
        create_model("p4-sa", crops=(1, 1))


def test_bn_buffers_are_randomized_by_the_helper() -> None:
    bn = randomize(GroupBatchNorm(3, P4))
    assert not torch.equal(bn.running_mean, torch.zeros(3)) and not torch.equal(bn.running_var, torch.ones(3))
