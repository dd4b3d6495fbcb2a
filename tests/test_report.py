"""``e4net.analysis.report``: aggregation of the seeds of a grid row, the markdown table with the paper's values
beside, the fig2 PNG, without training anything."""

from __future__ import annotations

import json

import pytest

from e4net.analysis.report import SeedResults, aggregate, markdown, write_report
from e4net.train.grids import PaperValue, Run

GRID = [
    Run("A", "tiny-bn", "digits", train_per_class=5, paper=PaperValue(1.5, 0.25, 18.8e3, 17e6)),
    Run("B", "tiny-plain", "digits", train_per_class=5),
]


def _summary(err: float) -> dict:
    return {"test_error": err, "params": 1234, "macs": 2.5e6, "epochs": 3, "seconds": 1.0}


def test_aggregate_and_markdown():
    results = [SeedResults([_summary(2.0), _summary(4.0)]), SeedResults([], ["seed 0: the loss became nan"])]
    rows = aggregate(GRID, results)
    assert rows[0]["test_errors"] == [2.0, 4.0] and rows[0]["mean"] == 3.0
    assert rows[0]["std"] == pytest.approx(2**0.5) and rows[0]["params"] == 1234 and rows[0]["paper"]["std"] == 0.25
    assert rows[1]["mean"] is None and rows[1]["params"] is None and rows[1]["paper"] is None
    md = markdown("table1", GRID, rows, seeds=2, epochs=3)
    assert md.startswith("## Table 1: ") and "3 epochs" in md
    assert "| A | 3.00 ± 1.41 (2 seeds) | 1.5 ± 0.25 | 1.23K | 18.8K | 2.5M | 17M |" in md
    assert "| B | — — 1 failed | — | — | — | — | — |" in md
    assert md.rstrip().endswith("- tiny-plain_digits_n5 seed 0: the loss became nan")


def test_write_report_fig2(tmp_path):
    rows = aggregate(GRID, [SeedResults([_summary(2.0)]), SeedResults([_summary(3.0)])])
    text, written = write_report("fig2", GRID, rows, tmp_path / "rep", seeds=1, epochs=None)
    assert [p.name for p in written] == ["fig2.md", "fig2.json", "fig2.png"]
    assert written[0].read_text() == text and "| A | 5 | 2.00 (1 seed) |" in text and "the recipe" in text
    assert json.loads(written[1].read_text()) == json.loads(json.dumps(rows))
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
