"""The benchmark harness (``e4net bench``): it measures what it says, computes the ratios against the baselines of
the same run, reports honest peak memory, and fails cleanly on bad input. No timing assertions."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from e4net.analysis import bench
from e4net.analysis.bench import instances, measure, train_step
from e4net.backends import check_backend
from e4net.cli.main import main
from e4net.nn import E4Conv, GlobalMaxPool, LiftingConv


@pytest.fixture
def small_layers(monkeypatch):
    """The E4-Net layer set at a small width (the real shapes take minutes on the reference backend)."""
    cases = [bench.LayerCase(f"E4-Net {s}px", "p4", 4, 5, 1, 2, s) for s in (9, 5)]
    monkeypatch.setitem(bench.LAYER_SETS, "e4net", lambda: cases)
    return cases


def test_layer_suite_rows_and_ratios(small_layers):
    res = bench.run_benchmarks(
        suites=["layers"], layer_sets=["e4net"], backends=["reference", "shift", "auto"], batch_size=2, repeats=1,
        progress=False,
    )  # fmt: skip
    rows = [r for r in res["rows"] if r["suite"] == "layers"]
    assert res["machine"]["torch"] == torch.__version__
    cases = {r["case"] for r in rows}
    assert cases == {"E4-Net 9px", "E4-Net 5px"}
    for case in cases:
        impls = {r["impl"]: r for r in rows if r["case"] == case}
        assert set(impls) == {"E4 reference", "E4 shift", "E4 auto=numba", "GroupConv k=3", "GroupConv k=5"}
        for r in impls.values():
            assert r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 and not r["note"]
            assert r["peak_mb"] is not None and r["peak_mb"] >= 0
        ref, gc3 = impls["E4 reference"], impls["GroupConv k=3"]
        assert ref["ratios"]["speedup_vs_ref"] == pytest.approx(1.0)
        assert gc3["ratios"]["vs_gconv3"] == pytest.approx(1.0)
        fast = impls["E4 auto=numba"]
        assert fast["ratios"]["speedup_vs_ref"] == pytest.approx(ref["fwdbwd_ms"] / fast["fwdbwd_ms"])
        assert fast["ratios"]["vs_gconv3"] == pytest.approx(gc3["fwdbwd_ms"] / fast["fwdbwd_ms"])
    agg = [r for r in res["rows"] if r["suite"] == "aggregation"]
    assert {(r["case"], r["impl"]) for r in agg} == {
        (c, i) for c in cases for i in ("agg reference", "agg shift", "agg auto=numba")
    }
    for r in agg:
        assert r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 and r["bytes_fwd_mb"] > 0 and r["bound_fwd_ms"] is None
    md = bench.to_markdown(res)
    assert "| E4-Net 9px | E4 reference |" in md and "GroupConv k=5" in md


def test_resnet_layer_shapes_follow_the_models():
    cases = bench.resnet_layers()
    assert [(c.group, c.fields, c.size) for c in cases[:4]] == [
        ("p4", 32, 32),
        ("p4", 64, 16),
        ("p4", 128, 8),
        ("p4", 256, 4),
    ]
    assert [c.fields for c in cases[4:]] == [22, 44, 88, 176]
    assert all(c.kernel_size == 3 and c.reduction == 2 and c.slices * 2 == c.fields for c in cases)


def test_aggregation_bytes_and_bound():
    """E4-Net 28px, batch 128, fp32: v = 25.69 MB, kernels (s k^2 = 50 per slot and pixel) = 80.28 MB."""
    case = bench.e4net_layers()[0]
    fwd, total = bench.aggregation_bytes(case, 128)
    v, k = 128 * 16 * 4 * 28 * 28 * 4, 128 * 2 * 25 * 4 * 28 * 28 * 4
    assert (fwd, total) == (2 * v + k, 5 * v + 3 * k)
    rows = bench.bench_aggregation(
        bench.LayerCase("t", "p4m", 2, 3, 1, 1, 5), ["reference"], 1, torch.device("cpu"), 1, 1.0
    )
    (r,) = rows
    assert r.bound_fwd_ms == pytest.approx(1e3 * r.bytes_fwd_mb * 1e6 / 1e9)
    assert r.ratios["fwd_vs_bound"] == pytest.approx(r.fwd_ms / r.bound_fwd_ms)


def test_peak_memory_measures_a_known_allocation():
    """A run that allocates 64 MiB (and frees it) peaks at ~64 MiB; a run that allocates nothing at ~0."""
    if bench.peak_memory_mb(lambda: None, torch.device("cpu")) is None:
        pytest.skip("no /proc peak-RSS accounting on this platform")

    def alloc():
        t = torch.ones(16 * 2**20)  # 64 MiB of float32, touched
        return float(t[-1])

    assert bench.peak_memory_mb(alloc, torch.device("cpu")) == pytest.approx(64, abs=6)
    assert bench.peak_memory_mb(lambda: None, torch.device("cpu")) < 6


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lift = LiftingConv(1, 4, 3, "p4")
        self.e4 = E4Conv(4, 4, 3, "p4", slices=2)
        self.pool = GlobalMaxPool()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.e4(self.lift(x))).flatten(1))


def test_train_suite_switches_every_e4_layer(monkeypatch):
    import e4net.models as models

    class Spec:
        input_shape = (1, 9, 9)

    monkeypatch.setattr(models, "create_model", lambda name, **kw: _Tiny())
    monkeypatch.setattr(models, "model_spec", lambda name: Spec())
    seen = []
    orig = train_step.switch_backend
    monkeypatch.setattr(train_step, "switch_backend", lambda m, b: seen.append(b) or orig(m, b))
    rows = bench.bench_train_step("tiny", ["reference", "auto"], 4, torch.device("cpu"), 1)
    assert seen == ["reference", "auto"]
    assert [r.impl for r in rows] == ["E4 reference", "E4 auto=numba"]
    for r in rows:
        assert r.images_per_s == pytest.approx(4 / (r.fwdbwd_ms / 1e3))
    assert rows[0].ratios["speedup_vs_ref"] == pytest.approx(1.0)
    m = _Tiny()
    assert bench.switch_backend(m, "shift") == 1 and m.e4.backend == "shift"


def test_unknown_model_is_reported_not_fatal():
    rows = bench.bench_train_step("no-such-model", ["reference"], 2, torch.device("cpu"), 1)
    assert len(rows) == 1 and "model not available" in rows[0].note


def test_cli_writes_json_and_markdown(tmp_path, capsys, small_layers):
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    argv = ["bench", "--suites", "layers", "--layer-sets", "e4net", "--batch-size", "1", "--repeats", "1"]
    assert main([*argv, "--json", str(js), "--markdown", str(md), "--no-progress"]) == 0
    out = capsys.readouterr().out
    data = json.loads(js.read_text())
    assert len(data["rows"]) == 2 * (4 + 2) and data["config"]["batch_size"] == 1
    assert md.read_text().strip() == out.strip()


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--suites", "nope"], "unknown suite"),
        (["--backends", "fastest"], "unknown backend"),
        (["--layer-sets", "vgg"], "unknown layer set"),
        (["--repeats", "0"], "must be positive"),
        (["--bandwidth", "-1"], "bandwidth must be positive"),
        (["--json", "/nonexistent-dir/x.json"], "does not exist"),
    ],
)
def test_cli_bad_input_one_line_error(argv, msg, capsys, small_layers):
    assert main(["bench", "--no-progress", *argv]) == 1
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_timings_run_before_any_memory_measurement(small_layers, monkeypatch):
    """Peak memory needs a fixed 64 KiB mmap threshold, which slows allocation-heavy code: every timing of the run
    must be taken before the first memory measurement, and the memory ratios must still be filled in."""
    events: list[str] = []
    real_times, real_peak = measure.median_times, measure.peak_memory_mb

    def times(*args, **kwargs):
        events.append("time")
        return real_times(*args, **kwargs)

    def peak(*args, **kwargs):
        events.append("memory")
        return real_peak(*args, **kwargs)

    monkeypatch.setattr(measure, "median_times", times)
    monkeypatch.setattr(measure, "peak_memory_mb", peak)
    res = bench.run_benchmarks(
        suites=["layers"], layer_sets=["e4net"], backends=["reference", "auto"], batch_size=2, repeats=1,
        progress=False,
    )  # fmt: skip
    assert "time" in events and "memory" in events
    assert events.index("memory") > len(events) - 1 - events[::-1].index("time")
    fast = next(r for r in res["rows"] if r["suite"] == "layers" and r["impl"].startswith("E4 auto"))
    assert fast["peak_mb"] is not None and "mem_vs_ref" in fast["ratios"]


# ---- the suite registry -------------------------------------------------------------------------------------------

# Every suite at a tiny size (a new suite adds its own small options here).
TINY = {
    "backends": ["reference", "auto"],
    "batch_size": 1,
    "repeats": 1,
    "layer_sets": ["e4net"],
    "models": ["e4net"],
    "instance_kernel_sizes": [1, 3],
    "instance_channels": 4,
    "instance_size": 6,
    "instance_batch_size": 1,
    "model_pairs": ["e4net:p4cnn@2"],
    "inference_models": ["p4cnn"],
    "inference_batch_sizes": [1, 2],
    "inference_runtimes": ["eval", "exported"],
    "volume_fields": 2,
    "volume_size": 4,
    "volume_batch_size": 1,
    "volume_train_batch_size": 1,
}


@pytest.mark.parametrize("name", list(bench.SUITES))
def test_every_suite_runs_small_with_ratios_against_its_baseline(name, small_layers):
    suite = bench.get_suite(name)
    res = bench.run_benchmarks(suites=[name], progress=False, **TINY)
    assert res["rows"] and {r["suite"] for r in res["rows"]} == set(suite.baselines)
    for kind, (key, baseline) in suite.baselines.items():
        rows = [r for r in res["rows"] if r["suite"] == kind]
        for case in {r["case"] for r in rows}:
            of_case = [r for r in rows if r["case"] == case]
            (base,) = [r for r in of_case if r["impl"] == baseline]
            assert base["ratios"][key] == pytest.approx(1.0)
            for r in of_case:
                assert not r["note"] and r["fwd_ms"] > 0 and key in r["ratios"]
                assert r["fwdbwd_ms"] is None if name == "inference" else r["fwdbwd_ms"] > 0  # no backward there
    md = bench.to_markdown(res)
    assert md.startswith("Device: ") and all(f"| {b} " in md for _, b in suite.baselines.values())
    plain = bench.render(res, "plain")
    assert "|---" not in plain and all(b in plain for _, b in suite.baselines.values())


def test_unknown_suite_is_one_clear_error():
    with pytest.raises(
        ValueError, match="unknown suite 'nope'; choose from layers, train, instances, models, inference, volumes"
    ):
        bench.run_benchmarks(suites=["layers", "nope"], progress=False)
    with pytest.raises(ValueError, match="unknown suite"):
        bench.get_suite("models ")


def test_list_suites_and_help_document_every_flag(capsys):
    assert main(["bench", "--list-suites"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == list(bench.SUITES)
    from e4net.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["bench"]
    for action in sub._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_config_defaults_name_what_the_suites_know():
    cfg = bench.BenchConfig()
    assert cfg.layer_sets == tuple(bench.LAYER_SETS) and cfg.instance_layers == tuple(bench.INSTANCE_LAYERS)
    assert set(cfg.suites) <= set(bench.SUITES)
    assert bench.BenchConfig(suites="layers,train").suites == ("layers", "train")


def test_backends_are_set_through_set_backend(monkeypatch):
    """A backend reaches the layers and models through e4net.nn.set_backend: check_backend's error, unchanged."""
    with pytest.raises(ValueError) as want:
        check_backend("fastest")
    case = bench.LayerCase("t", "p4", 2, 3, 1, 1, 5)
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=str(want.value)):
        bench.bench_layer(case, ["fastest"], 1, cpu, 1)
    with pytest.raises(ValueError, match=str(want.value)):
        bench.bench_train_step("e4net", ["fastest"], 1, cpu, 1)
    import e4net.analysis.bench.layers as layers

    seen = []
    real = layers.set_backend
    monkeypatch.setattr(layers, "set_backend", lambda m, b: seen.append(b) or real(m, b))
    bench.bench_layer(case, ["shift", "auto"], 1, cpu, 1)
    assert seen == ["shift", "auto"]


def test_aggregation_instances_show_the_quadratic_memory_of_attention():
    """GroupConv, E4Conv, self-attention and the attentive conv (instances of Eq. 9) side by side."""
    res = bench.run_benchmarks(
        suites=["instances"], instance_kernel_sizes=[1, 3], instance_channels=4, instance_size=6,
        instance_batch_size=1, repeats=1, progress=False,
    )  # fmt: skip
    rows = res["rows"]
    assert [(r["impl"], r["kernel_size"]) for r in rows][:4] == [
        ("GroupConv", 1),
        ("E4Conv", 1),
        ("GroupSelfAttention", 1),
        ("AttentiveGroupConv", 1),
    ]
    gsa = {r["kernel_size"]: r for r in rows if r["impl"] == "GroupSelfAttention"}
    assert gsa[3]["neighbourhood"] == 9 * gsa[1]["neighbourhood"]
    assert gsa[3]["saved_mb"] > 4 * gsa[1]["saved_mb"]  # memory grows with |N(e)| (deterministic, not a timing)
    table = instances.instances_table(rows).markdown()
    assert table.count("\n") == len(rows) + 1 and "GroupSelfAttention" in table
    with pytest.raises(ValueError, match="unknown layer"):
        bench.run_benchmarks(suites=["instances"], instance_layers=["Transformer"], progress=False)


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--instance-layers", "Transformer"], "unknown layer"),
        (["--instance-kernel-sizes", "3,4"], "odd and positive"),
        (["--instance-channels", "0"], "must be positive"),
        (["--train-batch-size", "0"], "must be positive"),
    ],
)
def test_cli_bad_suite_options_one_line_error(argv, msg, capsys):
    assert main(["bench", "--no-progress", "--suites", "instances", *argv]) == 1
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_models_suite_adds_the_authors_row_only_with_their_code(tmp_path):
    """The authors' E4-Net row comes from a checkout given by path (here a stand-in with their layout); without the
    path there is no such row; a folder that is not a checkout is one clear error."""
    pkg = tmp_path / "authors" / "model"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "architecture.py").write_text(
        "import torch\n"
        "class E4_net(torch.nn.Module):\n"
        "    def __init__(self, kernel_size=5, groups=8, reduction_ratio=1, drop=0.2):\n"
        "        super().__init__()\n"
        "        self.args = (kernel_size, groups, reduction_ratio, drop)\n"
        "        self.fc = torch.nn.Linear(28 * 28, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1))\n"
    )
    opts = dict(TINY, model_pairs=["e4net:p4cnn@2"])
    with_code = bench.run_benchmarks(suites=["models"], progress=False, authors_code=str(tmp_path / "authors"), **opts)
    impls = [r["impl"] for r in with_code["rows"]]
    assert impls == ["G-CNN twin", "e4net E4", "authors' E4-Net"]
    authors = with_code["rows"][2]
    assert authors["macs"] is None and authors["train_images_per_s"] > 0 and "train_vs_twin" in authors["ratios"]
    assert "authors' E4-Net" in bench.to_markdown(with_code)
    without = bench.run_benchmarks(suites=["models"], progress=False, **opts)
    assert [r["impl"] for r in without["rows"]] == ["G-CNN twin", "e4net E4"]
    shares = without["rows"][1]["shares"]
    assert shares["E4 aggregation"] > 0 and sum(shares.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a checkout of the authors' repository"):
        bench.run_benchmarks(suites=["models"], progress=False, authors_code=str(tmp_path), **opts)
    with pytest.raises(ValueError, match="E4:TWIN@BATCH"):
        bench.run_benchmarks(suites=["models"], progress=False, **dict(opts, model_pairs=["e4net-p4cnn"]))


def test_profile_categories():
    from e4net.analysis.bench.model_pairs import categorize

    assert categorize("e4net::numba_aggregate_backward") == "E4 aggregation"
    assert categorize("aten::bmm") == "GEMM (1x1 maps, linear)"
    assert categorize("aten::native_batch_norm_backward") == "norms"
    assert categorize("aten::bernoulli_") == "dropout"
    assert categorize("aten::max_pool2d_with_indices") == "pooling"
    assert categorize("aten::zeros") == "other"
