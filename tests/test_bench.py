"""The benchmark harness (``e4net bench``): it measures what it says, computes the ratios against the baselines of
the same run, reports honest peak memory, and fails cleanly on bad input. No timing assertions."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from e4net.analysis import bench
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
    import e4net.models.registry as registry

    class Spec:
        input_shape = (1, 9, 9)

    monkeypatch.setattr(models, "create_model", lambda name, **kw: _Tiny())
    monkeypatch.setattr(registry, "model_spec", lambda name: Spec())
    seen = []
    orig = bench.set_backend
    monkeypatch.setattr(bench, "set_backend", lambda m, b: seen.append(b) or orig(m, b))
    rows = bench.bench_train_step("tiny", ["reference", "auto"], 4, torch.device("cpu"), 1)
    assert seen == ["reference", "auto"]
    assert [r.impl for r in rows] == ["E4 reference", "E4 auto=numba"]
    for r in rows:
        assert r.images_per_s == pytest.approx(4 / (r.fwdbwd_ms / 1e3))
    assert rows[0].ratios["speedup_vs_ref"] == pytest.approx(1.0)
    m = _Tiny()
    assert bench.set_backend(m, "shift") == 1 and m.e4.backend == "shift"


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
    real_times, real_peak = bench.median_times, bench.peak_memory_mb

    def times(*args, **kwargs):
        events.append("time")
        return real_times(*args, **kwargs)

    def peak(*args, **kwargs):
        events.append("memory")
        return real_peak(*args, **kwargs)

    monkeypatch.setattr(bench, "median_times", times)
    monkeypatch.setattr(bench, "peak_memory_mb", peak)
    res = bench.run_benchmarks(
        suites=["layers"], layer_sets=["e4net"], backends=["reference", "auto"], batch_size=2, repeats=1,
        progress=False,
    )  # fmt: skip
    assert "time" in events and "memory" in events
    assert events.index("memory") > len(events) - 1 - events[::-1].index("time")
    fast = next(r for r in res["rows"] if r["suite"] == "layers" and r["impl"].startswith("E4 auto"))
    assert fast["peak_mb"] is not None and "mem_vs_ref" in fast["ratios"]
