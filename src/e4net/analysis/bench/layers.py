"""The ``layers`` suite: every E4 layer shape (:mod:`.layer_cases`) as ``E4Conv`` (Eq. 12) on the unfold
``reference`` backend and on each requested fast backend (``auto`` = what E4Conv picks on the device), next to a
:class:`~e4net.nn.GroupConv` (Eq. 5) of the same width with k=3 and one with the E4 layer's k; and the aggregation
alone on each backend (:mod:`.aggregation`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ...groups import resolve
from ...nn import E4Conv, GroupConv, set_backend
from .aggregation import KIND as AGGREGATION
from .aggregation import REFERENCE as AGG_REFERENCE
from .aggregation import aggregation_table, bench_aggregation
from .config import BenchConfig
from .layer_cases import LAYER_SETS, LayerCase
from .machine import backend_label
from .measure import MemoryJob, layer_runs, measure
from .rows import Row, add_ratio, add_speedups
from .suite import Suite
from .table import Table, fmt, fmt_ratio, impl_cell

KIND = "layers"
REFERENCE = "E4 reference"
GCONV3 = "GroupConv k=3"


def _ratios(rows: Sequence[Row]) -> None:
    """The speedups against the reference backend (:func:`.rows.add_speedups`) and ``vs_gconv3`` = GroupConv k=3
    fwd+bwd time / time (> 1: faster)."""
    add_speedups(rows, REFERENCE)
    add_ratio(rows, GCONV3, "fwdbwd_ms", "vs_gconv3", inverse=True)


def bench_layer(
    case: LayerCase,
    backends: Iterable[str],
    batch_size: int,
    device: torch.device,
    repeats: int,
    memory_jobs: list[MemoryJob] | None = None,
) -> list[Row]:
    """E4Conv on each backend (set with :func:`e4net.nn.set_backend`), GroupConv k=3 and GroupConv
    k=case.kernel_size, with ratios to the reference backend and to GroupConv k=3."""
    g = resolve(case.group)
    torch.manual_seed(0)
    x = torch.randn(batch_size, case.fields, g.order, case.size, case.size, device=device, requires_grad=True)
    impls: list[tuple[str, Callable[[], nn.Module]]] = []
    for b in backends:
        impls.append(
            (
                backend_label("E4", b, device),
                lambda b=b: set_backend(
                    E4Conv(case.fields, case.fields, case.kernel_size, g, case.reduction, case.slices), b
                ),
            )
        )
    impls.append((GCONV3, lambda: GroupConv(case.fields, case.fields, 3, g)))
    if case.kernel_size != 3:
        impls.append(
            (f"GroupConv k={case.kernel_size}", lambda: GroupConv(case.fields, case.fields, case.kernel_size, g))
        )
    rows = [Row(KIND, case.name, label) for label, _ in impls]
    runs = [layer_runs(make().to(device).train(), x) for _, make in impls]
    measure(rows, [r[0] for r in runs], [r[1] for r in runs], repeats, device, memory_jobs, _ratios)
    return rows


def _check(config: BenchConfig) -> None:
    for s in config.layer_sets:
        if s not in LAYER_SETS:
            raise ValueError(f"unknown layer set {s!r}; choose from {', '.join(LAYER_SETS)}")
    if config.bandwidth_gbs is not None and config.bandwidth_gbs <= 0:
        raise ValueError(f"bandwidth must be positive, got {config.bandwidth_gbs}")


def _cases(config: BenchConfig) -> list[LayerCase]:
    return [c for s in config.layer_sets for c in LAYER_SETS[s]()]


def _measure(case: LayerCase, config: BenchConfig, device: torch.device, jobs: list[MemoryJob]) -> list[Row]:
    rows = bench_layer(case, config.backends, config.batch_size, device, config.repeats, jobs)
    return rows + bench_aggregation(
        case, config.backends, config.batch_size, device, config.repeats, config.bandwidth_gbs, jobs
    )


def _tables(result: dict[str, Any]) -> list[Table]:
    rows = [r for r in result["rows"] if r["suite"] == KIND]
    tables = []
    if rows:
        caption = (
            f"Layers (batch {result['config']['batch_size']}): speedup = reference time / time (fwd+bwd); "
            "vs GConv3 = GroupConv k=3 time / time (> 1 is faster); mem = peak / reference peak."
        )
        headers = [
            "layer", "implementation", "fwd ms", "fwd+bwd ms", "peak MiB", "speedup fwd", "speedup fwd+bwd",
            "vs GConv3", "mem vs ref",
        ]  # fmt: skip
        cells = []
        for r in rows:
            q = r["ratios"]
            cells.append(
                [
                    r["case"],
                    impl_cell(r),
                    fmt(r["fwd_ms"]),
                    fmt(r["fwdbwd_ms"]),
                    fmt(r["peak_mb"], 0),
                    fmt_ratio(q.get("fwd_speedup_vs_ref")),
                    fmt_ratio(q.get("speedup_vs_ref")),
                    fmt_ratio(q.get("vs_gconv3")),
                    fmt_ratio(q.get("mem_vs_ref")),
                ]  # fmt: skip
            )
        tables.append(Table(caption, headers, cells, [False, False] + [True] * 7))
    return tables + aggregation_table(result)


SUITE = Suite(
    name="layers",
    summary="E4 layers of E4-Net / E4R18 per backend vs GroupConv k=3 and same k; the aggregation alone vs its "
    "bandwidth bound",
    cases=_cases,
    measure=_measure,
    tables=_tables,
    baselines={KIND: ("speedup_vs_ref", REFERENCE), AGGREGATION: ("speedup_vs_ref", AGG_REFERENCE)},
    check=_check,
)
