"""``e4net reproduce {table1,table2,table3,table4,fig2}``: run the grid behind a table / figure of the paper over
several seeds and write a markdown table (test error mean ± std, params, MACs, the paper's values beside them);
for ``fig2`` also a PNG of test error against the training-set size (Sec. 5.2).

Runs live in ``OUT/runs/RUN_ID/seedS``; a finished run (its ``summary.json``) is reused and an interrupted one is
resumed, so the command can be re-run until the whole grid is done.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from .train import add_data_arguments

TARGETS = ("table1", "table2", "table3", "table4", "fig2")
TITLES = {
    "table1": "Table 1: test error on rot-MNIST",
    "table2": "Table 2: the effect of concatenation along A (rot-MNIST)",
    "table3": "Table 3: hyper-parameters of the E4 layer (rot-MNIST)",
    "table4": "Table 4: test error on CIFAR-10 and CIFAR-100",
    "fig2": "Fig. 2: test error on CIFAR-10 against the training-set size per class",
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reproduce",
        help="run the grid behind a table or figure of the paper and write its markdown table",
        description="Train every configuration behind a table / figure of the paper once per seed (with the "
        "paper's recipe for its data set) and write OUT/TARGET.md (test error mean ± std over the seeds, params, "
        "MACs, the paper's values beside them) and OUT/TARGET.json; for fig2 also OUT/fig2.png. Finished runs are "
        "reused and interrupted ones resumed, so re-running continues the grid.",
    )
    p.add_argument("target", choices=TARGETS, help="the table or figure")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds per configuration (5, as in the paper)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the recipe's 200; milestones are rescaled)")
    p.add_argument("--out", metavar="DIR", default="runs/reproduce", help="output folder (runs/reproduce)")
    p.add_argument("--dry-run", action="store_true", help="list the runs (and which are done) without training")
    p.add_argument("--only", metavar="TEXT", help="only the configurations whose run id contains TEXT")
    add_data_arguments(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--limit-train-batches", type=int, metavar="N", help="smoke tests: at most N batches per epoch")
    p.add_argument("--limit-test-batches", type=int, metavar="N", help="smoke tests: at most N test batches")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)
    return p


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


def _paper_err(paper) -> str:
    if paper is None or paper.test_error is None:
        return "—"
    return f"{paper.test_error:g} ± {paper.std:g}" if paper.std is not None else f"{paper.test_error:g}"


def _run_dir(out: Path, run, seed: int) -> Path:
    return out / "runs" / run.run_id / f"seed{seed}"


def _status(d: Path) -> str:
    s = d / "summary.json"
    if s.is_file():
        try:
            if json.loads(s.read_text()).get("status") == "completed":
                return "done"
        except ValueError:
            pass
    return "partial" if (d / "checkpoint.pt").is_file() else "todo"


def aggregate(target: str, grid: list, out: Path, seeds: int) -> list[dict[str, Any]]:
    """Per row of the grid: the finished seeds' test errors, params, MACs, and the paper's values."""
    rows = []
    for run in grid:
        errs, params, macs, secs, epochs, failed = [], None, None, [], None, []
        for seed in range(seeds):
            d = _run_dir(out, run, seed)
            if _status(d) == "done":
                s = json.loads((d / "summary.json").read_text())
                errs.append(float(s["test_error"]))
                params, macs, epochs = s["params"], s["macs"], s["epochs"]
                secs.append(s["seconds"])
            elif (d / "failed.txt").is_file():
                failed.append(f"seed {seed}: {(d / 'failed.txt').read_text().strip()}")
        rows.append(
            {
                "label": run.label, "run_id": run.run_id, "model": run.model, "dataset": run.dataset,
                "train_per_class": run.train_per_class, "model_args": run.model_args, "test_errors": errs,
                "mean": statistics.fmean(errs) if errs else None,
                "std": statistics.stdev(errs) if len(errs) > 1 else None,
                "params": params, "macs": macs, "epochs": epochs, "seconds": secs, "failed": failed,
                "paper": None if run.paper is None else run.paper.__dict__,
            }
        )  # fmt: skip
    return rows


def markdown(target: str, grid: list, rows: list[dict[str, Any]], seeds: int, epochs: int | None) -> str:
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


def run(args: argparse.Namespace) -> int:
    from ..io import install_plain_warnings

    install_plain_warnings()
    from ..errors import E4NetError
    from ..models import list_models
    from ..train.grids import grid as grid_of
    from ..train.loop import TrainConfig, train

    if args.seeds < 1:
        raise E4NetError(f"--seeds must be at least 1, got {args.seeds}")
    grid = [r for r in grid_of(args.target) if not args.only or args.only in r.run_id]
    if not grid:
        raise E4NetError(f"--only {args.only!r} matches no configuration of {args.target}")
    out = Path(args.out)
    known = set(list_models())
    unique: dict[str, Any] = {}
    for r in grid:
        unique.setdefault(r.run_id, r)
    jobs = [(r, s) for r in unique.values() for s in range(args.seeds)]
    missing = sorted({r.model for r in unique.values() if r.model not in known})
    if args.dry_run:
        print(f"{args.target}: {len(unique)} configurations x {args.seeds} seeds = {len(jobs)} runs "
              f"({'the recipe' if not args.epochs else f'{args.epochs} epochs'} each), in {out / 'runs'}")  # fmt: skip
        for r, s in jobs:
            d = _run_dir(out, r, s)
            flag = "  (model not registered)" if r.model not in known else ""
            tpc = f" --train-per-class {r.train_per_class}" if r.train_per_class else ""
            margs = "".join(f" --model-arg {k}={v}" for k, v in r.model_args.items())
            root = "" if r.dataset == "digits" else f" --data-root {args.data_root or 'DIR'}"
            ep = f" --epochs {args.epochs}" if args.epochs else ""
            print(f"  [{_status(d):7s}] e4net train --model {r.model} --dataset {r.dataset}{root}{tpc}{margs}{ep} "
                  f"--seed {s} --out {d}{flag}")  # fmt: skip
        return 0
    if args.data_root is None and any(r.dataset != "digits" for r in unique.values()):
        raise E4NetError(f"{args.target} trains on {grid[0].dataset}: pass --data-root DIR (and --download if needed)")
    if missing:
        print(f"note: models not registered, their rows stay empty: {', '.join(missing)}", file=sys.stderr)
    failures = 0
    for i, (r, seed) in enumerate(jobs, 1):
        if r.model not in known:
            continue
        d = _run_dir(out, r, seed)
        status = _status(d)
        if status == "done":
            continue
        print(
            f"[{i}/{len(jobs)}] {r.run_id} seed {seed} ({'resuming' if status == 'partial' else 'new'})",
            file=sys.stderr,
        )
        cfg = TrainConfig(
            model=r.model, dataset=r.dataset, data_root=args.data_root, out=str(d), epochs=args.epochs,
            batch_size=args.batch_size, seed=seed, train_per_class=r.train_per_class, model_args=dict(r.model_args),
            device=args.device, resume=status == "partial", verify=args.verify, checksum=args.checksum,
            download=args.download, limit_train_batches=args.limit_train_batches,
            limit_test_batches=args.limit_test_batches, progress=args.progress,
        )  # fmt: skip
        if status == "partial":
            cfg = TrainConfig(out=str(d), resume=True, device=args.device, verify=args.verify, checksum=args.checksum,
                              data_root=args.data_root, progress=args.progress)  # fmt: skip
        try:
            train(cfg)
            (d / "failed.txt").unlink(missing_ok=True)
        except (E4NetError, ValueError, FileNotFoundError) as exc:
            failures += 1
            d.mkdir(parents=True, exist_ok=True)
            (d / "failed.txt").write_text(f"{exc}\n")
            print(f"  failed: {exc}", file=sys.stderr)
    rows = aggregate(args.target, grid, out, args.seeds)
    text = markdown(args.target, grid, rows, args.seeds, args.epochs)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.target}.md").write_text(text)
    (out / f"{args.target}.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(text)
    if args.target == "fig2":
        plot_fig2(rows, out / "fig2.png")
        print(f"wrote {out / 'fig2.png'}", file=sys.stderr)
    print(f"wrote {out / (args.target + '.md')}", file=sys.stderr)
    if failures:
        print(f"e4net reproduce: {failures} run(s) failed (see the table); re-run to retry them", file=sys.stderr)
        return 1
    if any(not math.isfinite(r["mean"]) for r in rows if r["mean"] is not None):
        return 1
    return 0
