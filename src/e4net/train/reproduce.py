"""Running the grid of runs behind a table or figure of the paper (``e4net reproduce``), then its report.

Every configuration of the grid (:mod:`e4net.train.grids`) is trained once per seed into
``OUT/runs/RUN_ID/seedS`` with the paper's recipe for its data set. A finished run (its ``summary.json``) is
reused and an interrupted one (a checkpoint, no summary) resumed, so the command can be re-run until the whole
grid is done; a run that fails leaves ``failed.txt`` (its message) and is retried next time. The report
(:mod:`e4net.analysis.report`) aggregates the finished seeds of every row.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.report import SeedResults, aggregate, write_report
from ..errors import E4NetError
from ..models import list_models
from .config import TrainConfig
from .grids import Run, grid
from .outputs import CHECKPOINT, SUMMARY
from .trainer import train

FAILED = "failed.txt"


@dataclass(frozen=True)
class Options:
    """The settings shared by every run of the grid (``None``: the recipe's)."""

    epochs: int | None = None
    batch_size: int | None = None
    data_root: str | None = None
    device: str = "auto"
    verify: bool = True
    checksum: str | None = None
    download: bool = False
    limit_train_batches: int | None = None
    limit_test_batches: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class Job:
    """One run: a configuration of the grid, trained with one seed into ``folder``."""

    run: Run
    seed: int
    folder: Path

    def status(self) -> str:
        """``done`` (a completed summary), ``partial`` (a checkpoint to resume) or ``todo``."""
        s = self.folder / SUMMARY
        if s.is_file():
            try:
                if json.loads(s.read_text()).get("status") == "completed":
                    return "done"
            except ValueError:
                pass
        return "partial" if (self.folder / CHECKPOINT).is_file() else "todo"


@dataclass(frozen=True)
class Plan:
    """The grid of ``target`` (its rows, filtered by ``--only``), its distinct configurations and their jobs."""

    target: str
    seeds: int
    out: Path
    rows: list[Run]
    configurations: list[Run]
    jobs: list[Job]
    unregistered: list[str]  # models of the grid not in the registry: their rows stay empty


def run_folder(out: Path, run: Run, seed: int) -> Path:
    return out / "runs" / run.run_id / f"seed{seed}"


def plan(target: str, seeds: int, out: Path, only: str | None = None) -> Plan:
    """The runs of ``target`` with ``seeds`` seeds each (configurations shared by several rows run once)."""
    if seeds < 1:
        raise E4NetError(f"--seeds must be at least 1, got {seeds}")
    rows = [r for r in grid(target) if not only or only in r.run_id]
    if not rows:
        raise E4NetError(f"--only {only!r} matches no configuration of {target}")
    unique: dict[str, Run] = {}
    for r in rows:
        unique.setdefault(r.run_id, r)
    jobs = [Job(r, s, run_folder(out, r, s)) for r in unique.values() for s in range(seeds)]
    known = set(list_models())
    missing = sorted({r.model for r in unique.values() if r.model not in known})
    return Plan(target, seeds, out, rows, list(unique.values()), jobs, missing)


def train_command(job: Job, options: Options) -> str:
    """The ``e4net train`` command line that trains ``job`` (what ``--dry-run`` lists)."""
    r = job.run
    tpc = f" --train-per-class {r.train_per_class}" if r.train_per_class else ""
    margs = "".join(f" --model-arg {k}={v}" for k, v in r.model_args.items())
    root = "" if r.dataset == "digits" else f" --data-root {options.data_root or 'DIR'}"
    ep = f" --epochs {options.epochs}" if options.epochs else ""
    return f"e4net train --model {r.model} --dataset {r.dataset}{root}{tpc}{margs}{ep} --seed {job.seed} --out {job.folder}"


def train_config(job: Job, options: Options, resume: bool) -> TrainConfig:
    """The settings of ``job``: a new run, or (``resume``) the continuation of the one saved in its folder."""
    o = options
    if resume:
        return TrainConfig(out=str(job.folder), resume=True, device=o.device, verify=o.verify, checksum=o.checksum,
                           data_root=o.data_root, progress=o.progress)  # fmt: skip
    r = job.run
    return TrainConfig(
        model=r.model, dataset=r.dataset, data_root=o.data_root, out=str(job.folder), epochs=o.epochs,
        batch_size=o.batch_size, seed=job.seed, train_per_class=r.train_per_class, model_args=dict(r.model_args),
        device=o.device, verify=o.verify, checksum=o.checksum, download=o.download,
        limit_train_batches=o.limit_train_batches, limit_test_batches=o.limit_test_batches, progress=o.progress,
    )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    text: str  # the markdown table
    rows: list[dict[str, Any]]  # the aggregated rows (OUT/TARGET.json)
    written: list[Path]
    failures: int  # runs that failed in this invocation

    @property
    def non_finite(self) -> bool:
        """Some row's mean test error is not a finite number."""
        return any(not math.isfinite(r["mean"]) for r in self.rows if r["mean"] is not None)


def reproduce(p: Plan, options: Options, log: Callable[[str], None] | None = None) -> Outcome:
    """Train every job of ``p`` that is not done yet (resuming interrupted ones), then aggregate the finished
    seeds and write the report. A failing run is recorded in its ``failed.txt`` and the grid goes on."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if options.data_root is None and any(r.dataset != "digits" for r in p.configurations):
        raise E4NetError(f"{p.target} trains on {p.rows[0].dataset}: pass --data-root DIR (and --download if needed)")
    if p.unregistered:
        log(f"note: models not registered, their rows stay empty: {', '.join(p.unregistered)}")
    failures = 0
    for i, job in enumerate(p.jobs, 1):
        if job.run.model in p.unregistered:
            continue
        status = job.status()
        if status == "done":
            continue
        log(f"[{i}/{len(p.jobs)}] {job.run.run_id} seed {job.seed} ({'resuming' if status == 'partial' else 'new'})")
        try:
            train(train_config(job, options, resume=status == "partial"))
            (job.folder / FAILED).unlink(missing_ok=True)
        except (E4NetError, ValueError, FileNotFoundError) as exc:
            failures += 1
            job.folder.mkdir(parents=True, exist_ok=True)
            (job.folder / FAILED).write_text(f"{exc}\n")
            log(f"  failed: {exc}")
    rows = aggregate(p.rows, collect(p))
    text, written = write_report(p.target, p.rows, rows, p.out, p.seeds, options.epochs)
    return Outcome(text, rows, written, failures)


def collect(p: Plan) -> list[SeedResults]:
    """Per row of the grid: the summaries of its finished seeds and the messages of its failed ones."""
    results = []
    for run in p.rows:
        res = SeedResults()
        for seed in range(p.seeds):
            job = Job(run, seed, run_folder(p.out, run, seed))
            if job.status() == "done":
                res.summaries.append(json.loads((job.folder / SUMMARY).read_text()))
            elif (job.folder / FAILED).is_file():
                res.failed.append(f"seed {seed}: {(job.folder / FAILED).read_text().strip()}")
        results.append(res)
    return results
