"""The E4 aggregation alone (the last step of Eq. 12, :func:`e4net.backends.aggregate` on given features and
generated kernels) on each backend, against the time its minimal memory traffic takes at the device's bandwidth.
Part of the ``layers`` suite: one row per backend for every layer shape."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from ...backends import aggregate
from ...groups import resolve
from .layer_cases import LayerCase
from .machine import backend_label
from .measure import MemoryJob, measure
from .rows import Row, add_speedups
from .table import Table, fmt, fmt_ratio, impl_cell

KIND = "aggregation"
REFERENCE = "agg reference"


@dataclass
class AggregationRow(Row):
    """A row of the aggregation alone, with its minimal DRAM traffic (MB = 1e6 bytes) and, when the bandwidth is
    known, that traffic's time at the bandwidth (the bound)."""

    bytes_fwd_mb: float | None = None
    bytes_fwdbwd_mb: float | None = None
    bound_fwd_ms: float | None = None
    bound_fwdbwd_ms: float | None = None


def aggregation_bytes(case: LayerCase, batch_size: int, itemsize: int = 4) -> tuple[int, int]:
    """Minimal DRAM bytes of the aggregation alone: forward and forward+backward (stride 1, output = v's size).

    Forward reads ``v`` (B C |A| H W) and the generated kernels (B s k^2 |A| H W) once and writes the output;
    backward reads ``grad_out``, ``v`` and the kernels and writes ``grad_v`` and ``grad_kernel``. Total:
    fwd = v + K + out, fwd+bwd = 3 v + 3 K + 2 out (every tensor crossing DRAM exactly once per pass).
    """
    n = resolve(case.group).order
    v = batch_size * case.fields * n * case.size**2 * itemsize
    k = batch_size * case.slices * case.kernel_size**2 * n * case.size**2 * itemsize
    return v + k + v, 3 * v + 3 * k + 2 * v


def bench_aggregation(
    case: LayerCase,
    backends: Iterable[str],
    batch_size: int,
    device: torch.device,
    repeats: int,
    bandwidth_gbs: float | None,
    memory_jobs: list[MemoryJob] | None = None,
) -> list[AggregationRow]:
    """The aggregation of ``case`` on each backend: times, speedup against the reference backend, and time against
    the bandwidth bound (``fwd_vs_bound``, ``fwdbwd_vs_bound``: > 1 is slower than the bound)."""
    g = resolve(case.group)
    torch.manual_seed(0)
    shape = (batch_size, case.fields, g.order, case.size, case.size)
    v = torch.randn(shape, device=device, requires_grad=True)
    kshape = (batch_size, case.slices, case.kernel_size**2, g.order, case.size, case.size)
    ker = (torch.randn(kshape, device=device) / case.kernel_size).requires_grad_()
    perm = g.relative_position_index(case.kernel_size).to(device)
    grad = torch.randn(shape, device=device)
    fwd_b, all_b = aggregation_bytes(case, batch_size, v.element_size())
    rows, fwds, fwdbwds = [], [], []
    for b in backends:
        row = AggregationRow(
            KIND, case.name, backend_label("agg", b, device), bytes_fwd_mb=fwd_b / 1e6, bytes_fwdbwd_mb=all_b / 1e6
        )
        if bandwidth_gbs:
            row.bound_fwd_ms = 1e3 * fwd_b / (bandwidth_gbs * 1e9)
            row.bound_fwdbwd_ms = 1e3 * all_b / (bandwidth_gbs * 1e9)
        rows.append(row)

        def fwd(b: str = b) -> torch.Tensor:
            return aggregate(v, ker, perm, 1, b)

        def fwdbwd(b: str = b) -> None:
            aggregate(v, ker, perm, 1, b).backward(grad)
            v.grad = ker.grad = None

        fwds.append(fwd)
        fwdbwds.append(fwdbwd)
    measure(rows, fwds, fwdbwds, repeats, device, memory_jobs, partial(add_speedups, baseline=REFERENCE))
    for r in rows:
        if r.bound_fwd_ms and r.fwd_ms:
            r.ratios["fwd_vs_bound"] = r.fwd_ms / r.bound_fwd_ms
        if r.bound_fwdbwd_ms and r.fwdbwd_ms:
            r.ratios["fwdbwd_vs_bound"] = r.fwdbwd_ms / r.bound_fwdbwd_ms
    return rows


def aggregation_table(result: dict[str, Any]) -> list[Table]:
    """The table of the aggregation rows of a run (none when there are none)."""
    rows = [r for r in result["rows"] if r["suite"] == KIND]
    if not rows:
        return []
    cfg = result["config"]
    bw = cfg.get("bandwidth_gbs")
    caption = (
        f"Aggregation alone (batch {cfg['batch_size']}, stride 1): MB = minimal DRAM traffic (every tensor once); "
        + (f"bound = MB / {bw:g} GB/s; x bound = time / bound." if bw else "no bandwidth given: no bound.")
    )
    headers = [
        "layer", "backend", "fwd ms", "fwd+bwd ms", "speedup fwd+bwd", "MB fwd", "MB fwd+bwd", "bound fwd ms",
        "bound fwd+bwd ms", "fwd x bound", "fwd+bwd x bound",
    ]  # fmt: skip
    cells = [
        [
            r["case"],
            impl_cell(r),
            fmt(r["fwd_ms"], 2),
            fmt(r["fwdbwd_ms"], 2),
            fmt_ratio(r["ratios"].get("speedup_vs_ref")),
            fmt(r["bytes_fwd_mb"]),
            fmt(r["bytes_fwdbwd_mb"]),
            fmt(r["bound_fwd_ms"], 3),
            fmt(r["bound_fwdbwd_ms"], 3),
            fmt_ratio(r["ratios"].get("fwd_vs_bound")),
            fmt_ratio(r["ratios"].get("fwdbwd_vs_bound")),
        ]  # fmt: skip
        for r in rows
    ]
    return [Table(caption, headers, cells, [False, False] + [True] * 9)]
