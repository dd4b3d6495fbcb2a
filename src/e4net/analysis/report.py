"""The report of a grid of runs behind a table or figure of the paper (``e4net reproduce``): the test errors of
each configuration aggregated over its seeds, a markdown table with the paper's values beside them, and for
Fig. 2 a PNG of test error against the training-set size per class (Sec. 5.2).

A grid row is any object with ``label``, ``run_id``, ``model``, ``dataset``, ``train_per_class``, ``model_args``
and ``paper`` (the paper's ``test_error``, ``std``, ``params``, ``macs``, or None), such as
:class:`e4net.train.grids.Run`; the paper's numbers come with the rows (from :mod:`e4net.paper`), none is written
here. Params and MACs are those measured by :func:`e4net.analysis.count` (the paper's "FLOPs" are MACs).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

TITLES = {
    "table1": "Table 1: test error on rot-MNIST",
    "table2": "Table 2: the effect of concatenation along A (rot-MNIST)",
    "table3": "Table 3: hyper-parameters of the E4 layer (rot-MNIST)",
    "table4": "Table 4: test error on CIFAR-10 and CIFAR-100",
    "fig2": "Fig. 2: test error on CIFAR-10 against the training-set size per class",
}


class GridRow(Protocol):
    label: str
    run_id: str
    model: str
    dataset: str
    train_per_class: int | None
    model_args: dict[str, Any]
    paper: Any


@dataclass
class SeedResults:
    """What the seeds of one grid row left: the ``summary.json`` of every finished seed (in seed order) and a
    ``"seed S: message"`` for every failed one."""

    summaries: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def aggregate(grid: Sequence[GridRow], results: Sequence[SeedResults]) -> list[dict[str, Any]]:
    """Per row of the grid: the finished seeds' test errors (mean, sample std), params, MACs, seconds, failures,
    and the paper's values."""
    rows = []
    for run, res in zip(grid, results, strict=True):
        errs = [float(s["test_error"]) for s in res.summaries]
        last = res.summaries[-1] if res.summaries else {}
        rows.append(
            {
                "label": run.label, "run_id": run.run_id, "model": run.model, "dataset": run.dataset,
                "train_per_class": run.train_per_class, "model_args": run.model_args, "test_errors": errs,
                "mean": statistics.fmean(errs) if errs else None,
                "std": statistics.stdev(errs) if len(errs) > 1 else None,
                "params": last.get("params"), "macs": last.get("macs"), "epochs": last.get("epochs"),
                "seconds": [s["seconds"] for s in res.summaries], "failed": list(res.failed),
                "paper": None if run.paper is None else vars(run.paper),
            }
        )  # fmt: skip
    return rows


def markdown(target: str, grid: Sequence[GridRow], rows: list[dict[str, Any]], seeds: int, epochs: int | None) -> str:
    """The markdown table of ``target``: test error mean ± std over seeds, params and MACs, the paper's beside."""
    lines = [f"## {TITLES[target]}", ""]
    lines.append(
        f"Test error (%) of the final epoch, mean ± std over seeds (of {seeds} requested), "
        f"{'the recipe' if not epochs else f'{epochs} epochs'}; params and MACs measured by e4net.count, "
        "the paper's values beside them (its 'FLOPs' are MACs)."
    )
    lines.append("")
    multi_ds = len({r.dataset for r in grid}) > 1
    sizes = target == "fig2"
    head = ["Model"] + (["Data"] if multi_ds else []) + (["Train / class"] if sizes else [])
    head += ["Test error (%)", "Paper", "Params", "Paper params", "MACs", "Paper FLOPs"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for run, r in zip(grid, rows):
        cells = [run.label] + ([run.dataset] if multi_ds else []) + ([str(run.train_per_class)] if sizes else [])
        err = _fmt_err(r["test_errors"])
        if r["failed"]:
            err += f" — {len(r['failed'])} failed"
        cells += [err, _paper_err(run.paper), _fmt_count(r["params"]), _fmt_count(run.paper and run.paper.params),
                  _fmt_count(r["macs"]), _fmt_count(run.paper and run.paper.macs)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    failures = [f"- {r['run_id']} {f}" for r in rows for f in r["failed"]]
    if failures:
        lines += ["", "Failed runs:", *failures]
    return "\n".join(lines) + "\n"


def plot_fig2(rows: list[dict[str, Any]], path: Path) -> None:
    """Fig. 2: test error (mean ± std over seeds) against training images per class, one line per model; the
    paper's values marked with x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    for label, rs in by_label.items():
        pts = sorted((r["train_per_class"], r["mean"], r["std"] or 0.0) for r in rs if r["mean"] is not None)
        if not pts:
            continue
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
        paper = [(r["train_per_class"], r["paper"]["test_error"]) for r in rs if r["paper"]]
        if paper:
            ax.scatter(*zip(*paper), marker="x", color=ax.lines[-1].get_color(), zorder=3)
    ax.set_xlabel("training images per class")
    ax.set_ylabel("test error (%)")
    ax.set_title("CIFAR-10: test error vs. training-set size (x: paper, 5k)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    target: str, grid: Sequence[GridRow], rows: list[dict[str, Any]], out: Path, seeds: int, epochs: int | None
) -> tuple[str, list[Path]]:
    """Write ``OUT/TARGET.md``, ``OUT/TARGET.json`` (the rows) and, for ``fig2``, ``OUT/fig2.png``; returns the
    markdown and the files written."""
    text = markdown(target, grid, rows, seeds, epochs)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{target}.md", out / f"{target}.json"]
    written[0].write_text(text)
    written[1].write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if target == "fig2":
        plot_fig2(rows, out / "fig2.png")
        written.append(out / "fig2.png")
    return text, written


def _fmt_count(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, f in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= f:
            return f"{n / f:.3g}{unit}"
    return str(int(n))


def _fmt_err(values: list[float]) -> str:
    if not values:
        return "—"
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.2f} (1 seed)"
    return f"{m:.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def _paper_err(paper: Any) -> str:
    if paper is None or paper.test_error is None:
        return "—"
    return f"{paper.test_error:g} ± {paper.std:g}" if paper.std is not None else f"{paper.test_error:g}"
