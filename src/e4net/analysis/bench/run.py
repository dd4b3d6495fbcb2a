"""Running the suites of a :class:`~e4net.analysis.bench.config.BenchConfig` (:func:`run_benchmarks`) and rendering
the result (:func:`render`, :func:`to_markdown`).

All timings of a run come first; the peak-memory measurements each case deferred (:mod:`.measure`) run after the
last suite has been timed, and the ratios that need them are filled in then.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import torch
from tqdm import tqdm

from .config import BenchConfig
from .machine import machine_info, machine_line
from .measure import MemoryJob
from .registry import SUITES, get_suite
from .rows import Row


def run_benchmarks(config: BenchConfig | None = None, *, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Run the suites of ``config`` (default :class:`BenchConfig`), with ``options`` replacing its fields (e.g.
    ``run_benchmarks(suites=["layers"], batch_size=2)``); returns ``{"machine": ..., "config": ..., "rows": [Row
    as dict, ...]}``, JSON-able. Bad options raise a ValueError before anything runs."""
    cfg = replace(config or BenchConfig(), **options)
    selected = {get_suite(name).name for name in cfg.suites}
    cfg.check()
    for suite in SUITES.values():
        suite.check(cfg)
    cfg = cfg.resolved()
    device = torch.device(cfg.device)
    machine = machine_info(device)  # before the memory measurements change the allocator setting
    tasks = [(s, case) for s in SUITES.values() if s.name in selected for case in s.cases(cfg)]
    rows: list[Row] = []
    jobs: list[MemoryJob] = []
    for suite, case in tqdm(tasks, desc="e4net bench", disable=not progress, unit="case"):
        rows += suite.measure(case, cfg, device, jobs)
    for job in tqdm(jobs, desc="peak memory", disable=not progress, unit="case"):
        job.run(device)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    return {"machine": machine, "config": config, "rows": [asdict(r) for r in rows]}


def render(result: dict[str, Any], style: str = "markdown") -> str:
    """The machine line, then every suite's tables with their captions (``style``: ``"markdown"`` or ``"plain"``)."""
    lines = [machine_line(result["machine"], result["config"]["repeats"]), ""]
    for suite in SUITES.values():
        for table in suite.tables(result):
            lines += [table.render(style), ""]
    return "\n".join(lines)


def to_markdown(result: dict[str, Any]) -> str:
    """:func:`render` as markdown tables."""
    return render(result, "markdown")
