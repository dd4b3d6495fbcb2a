"""Models of Tables 1-4: registry, invariance of every registered model's logits, counts, the table and the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import e4net
from e4net import groups
from e4net.analysis.paper_table import format_table, model_table
from e4net.models import create_model, list_models, model_spec
from e4net.paper import ablations, rows_for_model

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)

# Reduced widths keep the default invariance test fast; the real configurations run in the slow test below.
FAST_OVERRIDES: dict[str, dict] = {
    "r18": {"width": 8},
    "p4-r18": {"width": 4},
    "p4m-r18": {"width": 4},
    "p4-e4r18": {"width": 4},
    "p4m-e4r18": {"width": 4},
    "e4net-large": {"fields": 8, "slices": 4},
    "p4-sa": {"channels": 8, "heads": 2, "kernel_size": 3},
    "alpha-p4cnn": {"channels": 4},
    "gcnn3d": {"fields": 2},
}


def randomize(
    model: torch.nn.Module, input_shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64
) -> torch.nn.Module:
    """Random parameters AND random BN buffers / affine weights (not just the init values), eval mode, float64.

    The BN statistics are first calibrated on random inputs and then perturbed, so the network stays sensitive to
    its input (random statistics alone can drown every activation and make an invariance test vacuous).
    """
    gen = torch.Generator().manual_seed(seed)
    model = model.to(dtype)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if m in bns:
                    base = 1.0 if name == "weight" else 0.0
                    p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * p.std().clamp_min(0.05))
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        model(torch.randn(2, *input_shape, generator=gen, dtype=dtype))
        for m in bns:
            std = m.running_var.sqrt()
            m.running_mean.add_(0.2 * std * torch.randn(std.shape, generator=gen, dtype=std.dtype))
            m.running_var.mul_(0.5 + torch.rand(std.shape, generator=gen, dtype=std.dtype))
    return model.eval()


def group_of(name: str) -> groups.Group:
    g = model_spec(name).group
    # A model over p4m must be invariant to reflections too; plain (non-equivariant) models have no group.
    return groups.get(g) if g else groups.P4


def max_invariance_error(
    model: torch.nn.Module, x: torch.Tensor, group: groups.Group, generators_only: bool = False
) -> float:
    """Largest relative change of the logits over the group's non-identity elements (or only its generators r, m)."""
    elements = group.elements()[1:]
    if generators_only and isinstance(group, groups.SquareGroup):  # r and m generate p4 / p4m (keeps it affordable)
        elements = [group.element(1)] + ([group.element(0, 1)] if group.reflections else [])
    with torch.no_grad():
        y = model(x)
        errs = [(model(group.act_on_signal(x, g)) - y).abs().max().item() for g in elements]
    scale = y.abs().max().item()
    # The check is only meaningful if the logits depend on the input: the two examples must differ.
    assert (y[0] - y[1]).abs().max().item() > 1e-3 * scale, "degenerate model: logits do not depend on the input"
    return max(errs) / max(scale, 1e-12)


def equivariant_names() -> list[str]:
    return [n for n in list_models() if model_spec(n).group]


def _input(name: str, seed: int = 1) -> torch.Tensor:
    return torch.randn(
        2, *model_spec(name).input_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


# ---- registry -----------------------------------------------------------------------------------------------------
def test_required_names_are_registered():
    required = {"e4net", "e4net-large", "p4cnn", "r18", "p4-r18", "p4m-r18", "p4-e4r18", "p4m-e4r18"}
    assert required <= set(list_models())
    assert e4net.list_models() == list_models()


@pytest.mark.parametrize("name, small", [("e4net", {"fields": 4}), ("p4cnn", {"fields": 4})])
def test_num_classes_and_output_shape(name, small):
    model = create_model(name, num_classes=7, **small).eval()
    assert model(torch.zeros(3, *model_spec(name).input_shape)).shape == (3, 7)


def test_bad_override_is_a_clear_error():
    with pytest.raises(ValueError, match="bad override"):
        create_model("e4net", no_such_option=1)
    with pytest.raises(ValueError, match="concat"):
        create_model("e4net", concat="sideways")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")


def test_backend_override_is_set_on_every_e4_layer():
    """``create_model(name, backend=...)`` applies e4net.nn.set_backend to the built model (not a builder argument)."""
    from e4net.nn import E4Conv

    def backends(model: torch.nn.Module) -> set[str]:
        return {m.backend for m in model.modules() if isinstance(m, E4Conv)}

    assert backends(create_model("e4net")) == {"auto"}
    assert backends(create_model("e4net", backend="reference")) == {"reference"}
    assert backends(create_model("p4-e4r18", width=4, backend="reference")) == {"reference"}
    assert backends(create_model("p4cnn", backend="reference")) == set()  # no E4 layer: unchanged
    with pytest.raises(ValueError, match="unknown aggregation backend"):
        create_model("e4net", backend="nope")


def test_ablation_list_matches_tables_2_and_3():
    assert [a.label for a in ablations("table2")] == ["None", "only K", "only V", "K&V"]
    assert [a.label for a in ablations("table3")] == ["s=1", "s=2", "s=4", "r=1", "r=2", "r=4", "k=3", "k=5", "k=7"]
    assert all(a is not None and a.test_error is not None for a in ablations())
    with pytest.raises(ValueError):
        ablations("table9")


# ---- invariance ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", equivariant_names())
def test_logits_invariant_for_every_registered_model(name):
    """Eval-mode logits are unchanged by every element of the model's point group (rotations, and reflections for p4m)."""
    torch.manual_seed(0)
    model = randomize(create_model(name, **FAST_OVERRIDES.get(name, {})), model_spec(name).input_shape)
    err = max_invariance_error(model, _input(name), group_of(name))
    assert err < 1e-9, f"{name}: relative invariance error {err:.2e}"


def _distinct_ablations() -> list:
    # The baseline rows (K&V, s=2, r=1, k=5) are all the default e4net, tested above: keep one config of each.
    seen, out = {"concat=both", "slices=2", "reduction=1", "kernel_size=5"}, []
    for a in ablations():
        key = " ".join(f"{k}={v}" for k, v in a.overrides.items())
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


# Two representative ablations run by default (the E4 layer's equivariance for all settings is tested in the core
# tests); the rest are marked slow.
_FAST_ABLATIONS = {"e4net concat=none", "e4net kernel_size=7"}


@pytest.mark.parametrize(
    "ablation",
    [a if a.name in _FAST_ABLATIONS else pytest.param(a, marks=pytest.mark.slow) for a in _distinct_ablations()],
    ids=lambda a: a.name,
)
def test_ablations_are_invariant(ablation):
    """Every Table 2 / 3 configuration is invariant too."""
    model = randomize(create_model(ablation.model, **ablation.overrides), MNIST, seed=3)
    assert max_invariance_error(model, _input(ablation.model), groups.P4) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in equivariant_names() if n in FAST_OVERRIDES])
def test_logits_invariant_at_the_real_default_width(name):
    """The registered configurations themselves (full width), not only the reduced ones of the fast test."""
    # float32 to keep the full widths affordable: a wrong rotation anywhere gives errors of order 1, not 1e-4.
    model = randomize(create_model(name), model_spec(name).input_shape, dtype=torch.float32)
    x = _input(name).float()
    assert max_invariance_error(model, x, group_of(name), generators_only=True) < 1e-4


@settings(max_examples=6)
@given(
    fields=st.sampled_from([2, 4]),
    kernel_size=st.sampled_from([3, 5]),
    reduction=st.sampled_from([1, 2]),
    slices=st.sampled_from([1, 2]),
    concat=st.sampled_from(["both", "kernel", "value", "none"]),
    group=st.sampled_from(["p4", "p4m"]),
    seed=st.integers(0, 2**16),
)
def test_e4net_configurations_are_invariant(fields, kernel_size, reduction, slices, concat, group, seed):
    """Property test over E4-Net's hyper-parameters, random weights and random BN buffers (small widths)."""
    torch.manual_seed(seed)  # the example must not depend on the global RNG state left by earlier tests
    model = create_model(
        "e4net", fields=fields, kernel_size=kernel_size, reduction=reduction, slices=slices, concat=concat, group=group
    )
    model = randomize(model, MNIST, seed=seed)
    x = _input("e4net", seed)
    with torch.no_grad():
        y = model(x)
    # A random 2-field network can be dead (every ReLU off): its constant logits would prove nothing; skip it.
    assume((y[0] - y[1]).abs().max().item() > 1e-3 * y.abs().max().item())
    assert max_invariance_error(model, x, groups.get(group)) < 1e-9


def test_p4m_override_of_e4net_is_invariant_to_reflections():
    model = randomize(create_model("e4net", group="p4m", fields=8, slices=2), MNIST)
    assert max_invariance_error(model, _input("e4net"), groups.P4M) < 1e-9


def test_invariance_check_catches_a_planted_bug(monkeypatch):
    """Replacing the group max pool by 'take slot 0' breaks invariance: the check above must notice."""
    from e4net.nn import GroupMaxPool

    monkeypatch.setattr(GroupMaxPool, "forward", lambda self, x: x[:, :, 0])
    model = randomize(create_model("e4net"), MNIST)
    assert max_invariance_error(model, _input("e4net"), groups.P4) > 1e-3


def test_non_equivariant_r18_is_not_invariant():
    """Sanity of the test itself: a plain ResNet-18 is not rotation invariant."""
    model = randomize(create_model("r18", width=8), CIFAR)
    assert max_invariance_error(model, _input("r18"), groups.P4) > 1e-3


# ---- counts -------------------------------------------------------------------------------------------------------
def test_e4_layer_count_matches_sec_4_2():
    """E4Conv(16,16,5,p4,r=1,s=2): c^2|A|(1+1/r) + csk^2/r = 2848 weights, + 32 norm affine + 50 generator bias."""
    layer = e4net.nn.E4Conv(16, 16, 5, "p4", reduction=1, slices=2)
    c = e4net.count(layer, (16, 4, 28, 28))
    assert c.params == 2848 + 32 + 50
    # (1+1/r) c^2 |A|^2 hw + (1+s/r) k^2 c |A| hw at 28x28
    assert c.macs == (2 * 16**2 * 16 + 3 * 25 * 16 * 4) * 28 * 28 == 10_185_728


def test_e4net_follows_the_authors_code_where_the_paper_is_silent():
    """No dropout after the lifting layer and E4 #1 (5 dropouts, after E4 #2-#6), and a per-example norm in every
    kernel generator: the two choices without which E4-Net did not learn (docs/models.md)."""
    model = create_model("e4net")
    blocks = [m for m in model.features if isinstance(m, torch.nn.Sequential)]
    has_dropout = [any(isinstance(x, torch.nn.Dropout) for x in b) for b in blocks]
    assert has_dropout == [False, False, True, True, True, True, True]
    e4s = [m for m in model.modules() if isinstance(m, e4net.nn.E4Conv)]
    assert len(e4s) == 6 and all(isinstance(m.norm, e4net.nn.GroupInstanceNorm) for m in e4s)
    assert all(d.p == 0.2 for d in model.modules() if isinstance(d, torch.nn.Dropout))
    other = create_model("e4net", generator_norm="batch", dropout_from=1)
    assert all(isinstance(m.norm, e4net.nn.GroupBatchNorm) for m in other.modules() if isinstance(m, e4net.nn.E4Conv))
    assert sum(isinstance(m, torch.nn.Dropout) for m in other.modules()) == 6


def test_e4net_count_by_hand():
    # lifting 5x5 (400) + 7 BNs (7*32) + 6 E4 layers (2930 each) + linear 16->10 (170)
    params = 400 + 7 * 32 + 6 * 2930 + 170
    # lifting 16*4*25 per pixel at 28x28; E4 12992 per pixel on 28^2 + 2*14^2 + 3*7^2 pixels; linear 160
    macs = 16 * 4 * 25 * 784 + 12992 * (784 + 2 * 196 + 3 * 49) + 160
    c = e4net.count(create_model("e4net"), (1, 28, 28))
    assert (c.params, c.macs) == (params, macs)


def test_p4cnn_count_by_hand():
    f = 19
    params = f * 9 + 5 * f * f * 4 * 9 + 10 * f * 4 * 16 + 6 * 2 * f
    per = f * 4 * f * 4 * 9
    macs = f * 4 * 9 * 26**2 + per * (24**2 + 10**2 + 8**2 + 6**2 + 4**2) + 10 * 4 * f * 4 * 16
    c = e4net.count(create_model("p4cnn"), (1, 28, 28))
    assert (c.params, c.macs) == (params, macs) == (77_539, macs)


# ---- the table ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_rows():
    return model_table(dataset="mnist-rot")


def test_table_rows_and_paper_numbers(mnist_rows):
    names = [r.name for r in mnist_rows]
    assert {"e4net", "e4net-large", "p4cnn", "e4net concat=none", "e4net kernel_size=7"} <= set(names)
    row = next(r for r in mnist_rows if r.name == "e4net")
    assert row.paper.params == 18.8e3 and row.paper.macs == 17e6 and row.paper.test_error == 1.29
    assert row.params_diff == pytest.approx((row.params - 18.8e3) / 18.8e3)
    # every row off by more than 5% carries a recorded explanation
    for r in mnist_rows:
        if r.paper is not None and r.off:
            assert r.note and r.note != "unexplained deviation", r.name
    text = format_table(mnist_rows)
    assert "e4net concat=none" in text and "77,539" in text


def test_paper_style_macs_reproduce_tables_2_and_3(mnist_rows):
    """The derived paper convention (no E4 aggregation, 3 ops per normalised value) is within 1% on every row."""
    rows = [r for r in mnist_rows if r.paper is not None and r.paper.table in ("table2", "table3")]
    assert len(rows) == 13
    for r in rows:
        assert abs(r.macs_paper_style_diff) < 0.01, (r.name, r.macs_paper_style, r.paper.macs)
        assert abs(r.params_diff) < 0.05 or r.paper.label == "None", (r.name, r.params)


def test_table_filters_and_errors():
    rows = model_table(name="p4cnn")
    assert [r.name for r in rows] == ["p4cnn"]
    with pytest.raises(ValueError, match="unknown model"):
        model_table(name="nope")
    with pytest.raises(ValueError, match="unknown data set"):
        model_table(dataset="imagenet")


def test_unexplained_deviation_is_flagged(monkeypatch):
    """A row more than 5% off without a recorded explanation says so (the table never hides a deviation)."""
    from e4net.analysis import paper_table

    monkeypatch.setattr(paper_table, "DEVIATIONS", {})
    row = model_table(name="p4cnn")[0]
    assert row.off and row.note == "unexplained deviation"


# ---- CLI ----------------------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "e4net", "models", *args], capture_output=True, text=True, timeout=120)


def test_cli_prints_the_table():
    res = _cli("--name", "p4cnn")
    assert res.returncode == 0, res.stderr
    assert "p4cnn" in res.stdout and "77,539" in res.stdout and "46.2M" in res.stdout


def test_cli_bad_name_exits_1_without_traceback(capsys):
    from e4net.cli.main import main

    assert main(["models", "--name", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown model" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_json_rows(capsys):
    import json

    from e4net.cli.main import main

    assert main(["models", "--name", "p4cnn", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["name"] == "p4cnn" and rows[0]["params"] == 77_539 and rows[0]["paper"]["params"] == 77.54e3


def test_cli_help_explains_flags(capsys):
    from e4net.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["models", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dataset", "--name", "--no-ablations", "--json"):
        assert flag in out


# ---- ResNet-18 family ---------------------------------------------------------------------------------------------
def test_r18_is_the_standard_cifar_resnet18():
    """11,173,962 params; MACs: stem + 4 stage-1 convs + 3 x (strided conv, 3 convs, 1x1 shortcut) + linear."""
    macs = (
        3 * 64 * 9 * 1024 + 4 * 64 * 64 * 9 * 1024 + 3 * (128 * 64 * 9 * 256 + 3 * 128 * 128 * 9 * 256 + 128 * 64 * 256)
    )
    c = e4net.count(create_model("r18"), CIFAR)
    assert (c.params, c.macs) == (11_173_962, macs + 512 * 10)


def test_p4_r18_macs_by_hand():
    """Group convs cost C'|A| C|A| k^2 h'w'; downsampling convs run at stride 1 on the larger map, then 2x2 pooling.

    The authors' shortcut (default) convolves at full resolution before pooling; pooling first costs 1/4 of that."""
    n = 4

    def gc(cout, cin, k, hw):
        return cout * n * cin * n * k * k * hw

    def macs(shortcut_hw):
        stage = gc(64, 32, 3, 1024) + 3 * gc(64, 64, 3, 256) + gc(64, 32, 1, shortcut_hw)  # the same for stages 2-4
        return 32 * n * 3 * 9 * 1024 + 4 * gc(32, 32, 3, 1024) + 3 * stage + 256 * 10

    assert e4net.count(create_model("p4-r18"), CIFAR).macs == macs(1024) == 2_973_108_736
    pool_first = create_model("p4-r18", shortcut_pool_first=True)
    assert e4net.count(pool_first, CIFAR).macs == macs(256) == 2_897_611_264


def test_group_resnets_structure():
    from e4net.nn import E4Conv, GroupConv, LiftingConv

    r18 = sum(p.numel() for p in create_model("r18").parameters())
    for name, width in [("p4-r18", 32), ("p4m-r18", 22), ("p4-e4r18", 32), ("p4m-e4r18", 22)]:
        model = create_model(name)
        assert model.stem[0].out_channels == width and model.classifier.in_features == 8 * width
        convs = [m for m in model.modules() if isinstance(m, (LiftingConv, GroupConv, E4Conv))]
        assert all(m.stride == 1 for m in convs), "strided layers on even maps are not exact"
        assert all(m.group.name == model_spec(name).group for m in convs)
        for block in model.layers:
            if "e4" in name:
                c = block.conv2
                assert isinstance(c, E4Conv) and (c.kernel_size, c.reduction, c.slices) == (3, 2, c.out_channels // 2)
            else:
                assert isinstance(block.conv2, GroupConv)
        if "e4" not in name:  # width x sqrt(|A|) keeps the parameters about the same
            assert abs(sum(p.numel() for p in model.parameters()) / r18 - 1) < 0.06


def test_avg_shortcut_order_is_the_same_map_and_only_changes_the_cost():
    """Average pooling and the 1x1 shortcut convolution commute: both orders give the same logits."""
    a = create_model("p4-e4r18", width=2, downsample_pool="avg", shortcut_pool_first=True).eval()
    b = create_model("p4-e4r18", width=2, downsample_pool="avg", shortcut_pool_first=False).eval()
    with torch.no_grad():  # same parameters and buffers (only the shortcut's module order differs)
        for ta, tb in zip([*a.parameters(), *a.buffers()], [*b.parameters(), *b.buffers()]):
            tb.copy_(ta)
    x = torch.randn(1, *CIFAR)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)
    assert e4net.count(b, CIFAR).macs > e4net.count(a, CIFAR).macs


def test_max_shortcut_order_is_a_different_map():
    """Max pooling does not commute with the 1x1 convolution: pooling first (allowed, cheaper) is another network."""
    a = randomize(create_model("p4-r18", width=2), CIFAR)
    b = create_model("p4-r18", width=2, shortcut_pool_first=True).double().eval()
    b.load_state_dict({k.replace("shortcut.0.", "shortcut.1."): v for k, v in a.state_dict().items()})
    x = _input("p4-r18")
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


# The old choices of this package, each as an option next to the authors' defaults.
OURS = {"downsample_pool": "avg", "shortcut_pool_first": True, "head": "mean", "dropout": 0.0}
_RESNET_OPTIONS = [{k: v} for k, v in OURS.items()] + [OURS, {"shortcut_pool_first": True}, {"dropout": 0.5}]


@pytest.mark.parametrize("name", ["p4-r18", "p4m-e4r18"])
@pytest.mark.parametrize("options", _RESNET_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_resnet_options_keep_exact_invariance(name, options):
    """Every option value: logits unchanged by every element of the group (p4m: rotations and reflections), with
    random parameters and random BN buffers."""
    model = randomize(create_model(name, width=4, **options), CIFAR, seed=5)
    assert max_invariance_error(model, _input(name, seed=2), group_of(name)) < 1e-9


def test_group_resnet_defaults_are_the_authors_choices():
    """LingshenHe/Efficient-Equivariant-Network: C_4_3x3(stride 2) = conv, then MaxPool2d(2, 2); Dropout(0.2, the
    train.py default) after it, then BN, ReLU; shortcut C_4_1x1 = 1x1 conv, then MaxPool2d(2, 2), then BN; head:
    C_4_Pool (max over the group), AdaptiveAvgPool2d(1), fc."""
    from e4net.models.resnet import AUTHORS_DROPOUT
    from e4net.nn import GroupBatchNorm, GroupConv, GroupMaxPool, SpatialMaxPool2d

    assert AUTHORS_DROPOUT == 0.2
    for name in ("p4-r18", "p4m-r18", "p4-e4r18", "p4m-e4r18"):
        model = create_model(name, width=4)
        for i, block in enumerate(model.layers):
            assert block.dropout.p == 0.2
            if i in (2, 4, 6):  # first block of stages 2-4
                assert isinstance(block.pool, SpatialMaxPool2d) and block.pool.kernel_size == 2
                kinds = [type(m) for m in block.shortcut]
                assert kinds == [GroupConv, SpatialMaxPool2d, GroupBatchNorm]
            else:
                assert isinstance(block.pool, torch.nn.Identity) and len(block.shortcut) == 0
        assert isinstance(model.pool[0], GroupMaxPool)
    # the order inside a block: conv1 -> pool -> dropout -> bn1 -> ... (recorded by forward hooks)
    block, calls = create_model("p4-r18", width=4).layers[2], []
    for n in ("conv1", "pool", "dropout", "bn1", "conv2"):
        getattr(block, n).register_forward_hook(lambda m, i, o, n=n: calls.append(n))
    block(torch.randn(1, 4, 4, 8, 8))
    assert calls == ["conv1", "pool", "dropout", "bn1", "conv2"]


def test_r18_has_the_authors_dropout_after_conv1():
    model, calls = create_model("r18", width=8), []
    assert all(b.dropout.p == 0.2 for b in model.layers)
    assert all(b.dropout.p == 0.0 for b in create_model("r18", width=8, dropout=0.0).layers)
    block = model.layers[0]
    for n in ("conv1", "dropout", "bn1"):
        getattr(block, n).register_forward_hook(lambda m, i, o, n=n: calls.append(n))
    block(torch.randn(1, 8, 8, 8))
    assert calls == ["conv1", "dropout", "bn1"]


def test_default_head_is_max_over_group_then_spatial_mean():
    """Against a hand-written head; the mean over the group (the ``head="mean"`` option) gives other logits."""
    model = randomize(create_model("p4m-r18", width=4), CIFAR)
    x = _input("p4m-r18")
    with torch.no_grad():
        features = model.layers(model.stem(x))  # (B, C, |A|, H, W)
        by_hand = model.classifier(features.amax(dim=2).mean(dim=(-2, -1)))
        mean_head = model.classifier(features.mean(dim=(2, 3, 4)))
        torch.testing.assert_close(model(x), by_hand, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(model(x), mean_head)
        other = create_model("p4m-r18", width=4, head="mean").double().eval()
        other.load_state_dict(model.state_dict())
        torch.testing.assert_close(other(x), mean_head, rtol=1e-12, atol=1e-12)


def test_resnet_options_keep_the_state_dict_keys():
    """No option adds or renames a parameter except the shortcut's order (its conv's index in the Sequential):
    checkpoints of the earlier defaults load into ``**OURS``, the authors' defaults load across the other options."""
    default = create_model("p4-e4r18", width=4).state_dict()
    ours = create_model("p4-e4r18", width=4, **OURS).state_dict()
    assert "layers.2.shortcut.0.weight" in default and "layers.2.shortcut.1.weight" in ours
    assert {k.replace("shortcut.0.", "shortcut.1.") for k in default} == set(ours)
    for options in ({"downsample_pool": "avg"}, {"head": "mean"}, {"dropout": 0.0}):
        create_model("p4-e4r18", width=4, **options).load_state_dict(default)  # strict


def test_resnet_rejects_unknown_options():
    with pytest.raises(ValueError, match="downsample_pool"):
        create_model("p4-r18", width=4, downsample_pool="median")
    with pytest.raises(ValueError, match="head"):
        create_model("p4-r18", width=4, head="sum")


def test_e4_resnet_rejects_odd_slicing():
    with pytest.raises(ValueError, match="slices"):
        create_model("p4-e4r18", width=3)


def test_table4_paper_rows_recorded():
    (row,) = rows_for_model("p4m-e4r18", {})
    assert (row.table, row.params, row.macs) == ("table4", 6.0e6, 3.87e9)
    assert (row.test_error, row.test_error_std, row.test_error_cifar100, row.test_error_cifar100_std) == (
        4.96,
        0.16,
        22.18,
        0.46,
    )
    paper = [n for n in list_models() if model_spec(n).dataset in ("mnist-rot", "cifar10")]  # not the 3-D models
    assert all(rows_for_model(n, {}) for n in paper if n in FAST_OVERRIDES or n in ("e4net", "p4cnn"))


# ---- unpadded convolutions of P4CNN ----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_valid_convs_are_exactly_equivariant(k, group):
    """Unpadded lifting / group convolutions commute with the group action, also for the even 4x4 kernel."""
    from e4net.nn import GroupConv, LiftingConv

    g = groups.get(group)
    torch.manual_seed(k)
    lift = LiftingConv(2, 3, k, g, padding="valid").double()
    conv = GroupConv(3, 2, k, g, padding="valid").double()
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    for e in g.elements():
        y = lift(g.act_on_signal(x, e))
        torch.testing.assert_close(y, g.act_on_features(lift(x), e))
        torch.testing.assert_close(conv(y), g.act_on_features(conv(lift(x)), e))
    assert lift(x).shape == (2, 3, g.order, 10 - k, 10 - k)
    with pytest.raises(ValueError, match="smaller than"):
        conv(torch.zeros(1, 3, g.order, 2, 2, dtype=torch.float64))


def test_valid_conv_check_catches_a_wrong_filter_bank(monkeypatch):
    """Planted bug: build the filter bank without transforming the kernel; the equivariance check must fail."""
    from e4net.nn import LiftingConv

    g = groups.P4
    lift = LiftingConv(1, 2, 3, g, padding="valid").double()
    monkeypatch.setattr(lift, "filter_bank", lambda: torch.stack([lift.weight] * g.order, dim=1).reshape(-1, 1, 3, 3))
    x = torch.randn(1, 1, 7, 7, dtype=torch.float64)
    assert not torch.allclose(lift(g.act_on_signal(x, 1)), g.act_on_features(lift(x), 1))


def test_table1_paper_rows_recorded():
    rows = {n: rows_for_model(n, {})[0] for n in ("p4cnn", "e4net", "e4net-large")}
    assert [(r.params, r.macs, r.test_error, r.test_error_std) for r in rows.values()] == [
        (77.54e3, 46.2e6, 1.79, 0.043),
        (18.8e3, 17e6, 1.29, 0.023),
        (41.1e3, 36.9e6, 1.17, 0.019),
    ]


def test_flag_logic_on_constructed_rows():
    """'~' only when the full MAC count alone is off and the model has an E4 aggregation; else '!'."""
    from e4net.analysis.paper_table import TableRow
    from e4net.paper import PaperRow

    paper = PaperRow("table1", "E4-Net", "e4net", 1000, 1_000_000)
    conv = TableRow("x", "x", "p4", "mnist-rot", 1000, 1_080_000, 990_000, 0, paper)
    assert conv.convention_only and not conv.off and conv.note.startswith("MAC convention only")
    no_agg = TableRow("x", "x", "p4", "mnist-rot", 1000, 1_080_000, 1_080_000, 0, paper)
    assert no_agg.off and not no_agg.convention_only
    params_off = TableRow("x", "x", "p4", "mnist-rot", 1100, 1_000_000, 1_000_000, 0, paper)
    assert params_off.off and params_off.note  # the recorded E4-Net note or "unexplained deviation"
    fine = TableRow("x", "x", "p4", "mnist-rot", 1040, 1_040_000, 1_000_000, 0, paper)
    assert not fine.off and not fine.convention_only and fine.note == ""
    assert "~ [1]" in format_table([conv]) and "! [1]" in format_table([no_agg])


def test_conv_norm_act_block_is_the_sequential_of_its_modules():
    """conv_bn_act's block (ConvNormAct) computes what nn.Sequential of the same modules does (norm and ReLU fused
    on the CPU), updates the same running statistics, and has the same state_dict keys; a hook on its ReLU, or a
    module other than nn.ReLU in that place, runs the modules one by one."""
    import copy

    from e4net.groups import P4
    from e4net.models.blocks import ConvNormAct, conv_bn_act
    from e4net.nn import GroupConv

    torch.manual_seed(0)
    block = conv_bn_act(GroupConv(3, 4, 3, P4), 4, P4, dropout=0.0)
    assert isinstance(block, ConvNormAct)
    plain = nn.Sequential(*copy.deepcopy(list(block)))
    assert list(block.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 3, 4, 6, 6, requires_grad=True)
    y, want = block(x), plain(x)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block[1].running_var, plain[1].running_var)
    g = torch.randn_like(y)
    for a, b in zip(
        torch.autograd.grad(y, [x, *block.parameters()], g), torch.autograd.grad(want, [x, *plain.parameters()], g)
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    seen = []
    block[2].register_forward_hook(lambda *a: seen.append(1))
    block(x)
    assert seen == [1]
    block[2] = nn.LeakyReLU(0.5)
    assert (block(x) < 0).any()  # not fused into a ReLU
