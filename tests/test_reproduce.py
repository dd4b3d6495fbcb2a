"""``e4net reproduce``: the grids, --dry-run, and a tiny real grid (aggregation over seeds, markdown with the
paper's values, the fig2 PNG, reuse of finished runs, failed runs reported)."""

from __future__ import annotations

import json

import _tiny_models  # noqa: F401 - registers the tiny test models
import pytest

from e4net.cli.main import main
from e4net.train import grids
from e4net.train.grids import PaperValue, Run, grid


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))


def test_grids_match_the_paper():
    assert [r.model for r in grid("table1")] == ["p4-sa", "p4cnn", "alpha-p4cnn", "e4net", "e4net-large"]
    assert [r.paper.test_error for r in grid("table1")] == [2.54, 1.79, 1.69, 1.29, 1.17]
    assert [r.paper.test_error for r in grid("table2")] == [4.10, 1.96, 1.52, 1.29]
    assert grid("table2")[-1].model_args == {} and grid("table2")[0].model_args == {"concat": "none"}
    assert len({r.run_id for r in grid("table3")}) == 7  # s=2, r=1, k=5 are the same baseline
    assert {r.run_id for r in grid("table2")} & {r.run_id for r in grid("table3")} == {"e4net_mnist-rot"}
    assert {(r.dataset, r.paper.test_error) for r in grid("table4") if r.model == "p4m-e4r18"} == {
        ("cifar10", 4.96), ("cifar100", 22.18)}  # fmt: skip
    assert sorted({r.train_per_class for r in grid("fig2")}) == [1000, 2000, 3000, 4000, 5000]
    assert len(grid("fig2")) == 25


@pytest.mark.parametrize("target, n_runs", [("table1", 5), ("table2", 4), ("table3", 7), ("table4", 10), ("fig2", 25)])
def test_dry_run_lists_runs(tmp_path, capsys, target, n_runs):
    rc = main(["reproduce", target, "--seeds", "2", "--epochs", "3", "--dry-run", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 0 and f"= {2 * n_runs} runs" in out
    assert out.count("e4net train --model") == 2 * n_runs and "--epochs 3" in out
    assert not (tmp_path / "r").exists()


@pytest.fixture
def tiny_fig2(monkeypatch):
    grid = [
        Run(label, model, "digits", train_per_class=n, paper=PaperValue(80.0, 1.0, 1e3, 1e6) if n == 10 else None)
        for label, model in (("tiny BN", "tiny-bn"), ("tiny plain", "tiny-plain"))
        for n in (5, 10)
    ]
    monkeypatch.setitem(grids.GRIDS, "fig2", grid)
    return grid


def test_tiny_fig2_grid(tmp_path, capsys, tiny_fig2, monkeypatch):
    out = tmp_path / "rep"
    argv = ["reproduce", "fig2", "--seeds", "2", "--epochs", "1", "--batch-size", "25", "--limit-test-batches", "1",
            "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    md = (out / "fig2.md").read_text()
    assert md in printed or md.strip() in printed
    rows = json.loads((out / "fig2.json").read_text())
    assert len(rows) == 4 and all(len(r["test_errors"]) == 2 for r in rows)
    for r in rows:
        s0 = json.loads((out / "runs" / r["run_id"] / "seed0" / "summary.json").read_text())
        assert s0["train_size"] == 10 * r["train_per_class"]
        assert r["test_errors"][0] == s0["test_error"]
        assert abs(r["mean"] - sum(r["test_errors"]) / 2) < 1e-9
    line = next(x for x in md.splitlines() if x.startswith("| tiny BN | 10 |"))
    assert "± " in line and "(2 seeds)" in line and "| 80 ± 1 |" in line and "| 1K |" in line
    png = (out / "fig2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # A second invocation reuses every finished run: nothing is trained again.
    monkeypatch.setattr("e4net.train.reproduce.train", lambda cfg: pytest.fail("re-trained a finished run"))
    assert main(argv) == 0
    assert (out / "fig2.md").read_text() == md


def test_failed_runs_are_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(grids.GRIDS, "table2", [Run("diverges", "tiny-nan", "digits", train_per_class=10)])
    rc = main(["reproduce", "table2", "--seeds", "1", "--epochs", "1", "--batch-size", "10", "--no-progress",
               "--out", str(tmp_path / "rep")])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 1 and "1 run(s) failed" in cap.err and "Traceback" not in cap.err
    assert "1 failed" in (tmp_path / "rep" / "table2.md").read_text()
    assert "step 6" in (tmp_path / "rep" / "table2.md").read_text()


def test_reproduce_needs_data_root(tmp_path, capsys):
    rc = main(["reproduce", "table1", "--seeds", "1", "--out", str(tmp_path / "r")])
    assert rc == 1 and "--data-root" in capsys.readouterr().err
