"""The ``instances`` suite: layers that are instances of the generalised equivariant aggregation (Eq. 9, Theorem 1)
side by side at several neighbourhood sizes -- :class:`~e4net.nn.GroupConv` (Eq. 5, the baseline),
:class:`~e4net.nn.E4Conv` (Eq. 12), :class:`~e4net.nn.GroupSelfAttention` (Eq. 6) and the attentive group
convolution :class:`~e4net.nn.AttentiveGroupConv` -- each with ``C_in = C_out`` fields at kernel size ``k``.

For every layer and k: parameters and MACs of one example (:func:`e4net.analysis.count`), the neighbourhood size
``|N(e)|``, forward and forward+backward medians, the memory of the tensors autograd saves for the backward pass
(deterministic, any device) and the peak memory of one forward+backward. Ratios are against GroupConv at the same k
(time / GroupConv time: > 1 is slower). Attention is quadratic in the neighbourhood: every query meets all
``|N(e)|`` neighbours (and the attentive conv materialises every contribution).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...groups import resolve
from ...nn import AttentiveGroupConv, E4Conv, GroupConv, GroupSelfAttention
from ..count import count
from .config import BenchConfig
from .measure import MemoryJob, layer_runs, measure
from .memory import saved_bytes
from .rows import Row, add_ratio
from .suite import Suite
from .table import Table, fmt, fmt_ratio, impl_cell

KIND = "instances"
BASELINE = "GroupConv"

# name -> constructor (fields C, kernel size k, group name)
INSTANCE_LAYERS: dict[str, Callable[[int, int, str], nn.Module]] = {
    "GroupConv": lambda c, k, g: GroupConv(c, c, k, g),
    "E4Conv": lambda c, k, g: E4Conv(c, c, k, g, reduction=2, slices=2),
    "GroupSelfAttention": lambda c, k, g: GroupSelfAttention(c, c, k, g, heads=4, head_channels=max(1, c // 4)),
    "AttentiveGroupConv": lambda c, k, g: AttentiveGroupConv(c, c, k, g),
}


@dataclass
class InstanceRow(Row):
    """A row of the instances suite: one layer at one kernel size; ``saved_mb`` = memory autograd saves (MiB)."""

    kernel_size: int = 0
    neighbourhood: int = 0
    params: int = 0
    macs: int = 0
    saved_mb: float | None = None


def _ratios(rows: Sequence[Row]) -> None:
    """``time_vs_groupconv`` = fwd+bwd time / GroupConv's (> 1: slower), ``saved_vs_groupconv`` and
    ``mem_vs_groupconv`` the same for the saved and the peak memory."""
    add_ratio(rows, BASELINE, "fwdbwd_ms", "time_vs_groupconv")
    add_ratio(rows, BASELINE, "saved_mb", "saved_vs_groupconv")
    add_ratio(rows, BASELINE, "peak_mb", "mem_vs_groupconv")


def bench_instances(
    kernel_size: int,
    layers: Sequence[str],
    channels: int,
    size: int,
    batch_size: int,
    group: str,
    device: torch.device,
    repeats: int,
    memory_jobs: list[MemoryJob] | None = None,
) -> list[InstanceRow]:
    """Every layer of ``layers`` at ``kernel_size`` on one float32 ``(batch, channels, |A|, size, size)`` batch,
    in training mode, timed interleaved."""
    g = resolve(group)
    torch.manual_seed(0)
    x = torch.randn(batch_size, channels, g.order, size, size, device=device, requires_grad=True)
    rows, runs = [], []
    for name in layers:
        layer = INSTANCE_LAYERS[name](channels, kernel_size, group).to(device).train()
        c = count(layer, (channels, g.order, size, size))
        row = InstanceRow(
            KIND, f"k={kernel_size}", name, kernel_size=kernel_size, neighbourhood=layer.neighbourhood_size(),
            params=c.params, macs=c.macs, saved_mb=saved_bytes(layer, x) / 2**20,
        )  # fmt: skip
        rows.append(row)
        runs.append(layer_runs(layer, x))
    measure(rows, [r[0] for r in runs], [r[1] for r in runs], repeats, device, memory_jobs, _ratios)
    return rows


def _check(config: BenchConfig) -> None:
    unknown = [name for name in config.instance_layers if name not in INSTANCE_LAYERS]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown} for the instances suite; known: {', '.join(INSTANCE_LAYERS)}")
    bad = [k for k in config.instance_kernel_sizes if k < 1 or k % 2 == 0]
    if bad:
        raise ValueError(f"instance kernel sizes must be odd and positive, got {bad}")
    for name in ("instance_channels", "instance_size", "instance_batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name.replace('_', ' ')} must be positive, got {getattr(config, name)}")
    resolve(config.instance_group)


def _measure(kernel_size: int, config: BenchConfig, device: torch.device, jobs: list[MemoryJob]) -> list[Row]:
    return list(
        bench_instances(
            kernel_size,
            config.instance_layers,
            config.instance_channels,
            config.instance_size,
            config.instance_batch_size,
            config.instance_group,
            device,
            config.repeats,
            jobs,
        )  # fmt: skip
    )


def instances_table(rows: Sequence[dict[str, Any]], caption: str = "") -> Table:
    """The rows of the instances suite (as dicts) as one table, ratios against GroupConv at the same k."""
    headers = [
        "layer", "k", "|N(e)|", "params", "MACs/example (M)", "fwd ms", "fwd+bwd ms", "fwd+bwd vs GroupConv",
        "saved for bwd (MB)", "saved vs GroupConv", "peak MiB",
    ]  # fmt: skip
    cells = [
        [
            impl_cell(r),
            str(r["kernel_size"]),
            str(r["neighbourhood"]),
            f"{r['params']:,}",
            f"{r['macs'] / 1e6:.1f}",
            fmt(r["fwd_ms"]),
            fmt(r["fwdbwd_ms"]),
            fmt_ratio(r["ratios"].get("time_vs_groupconv")),
            fmt(r["saved_mb"]),
            fmt_ratio(r["ratios"].get("saved_vs_groupconv")),
            fmt(r["peak_mb"]),
        ]  # fmt: skip
        for r in rows
    ]
    return Table(caption, headers, cells, [False] + [True] * 10)


def _tables(result: dict[str, Any]) -> list[Table]:
    rows = [r for r in result["rows"] if r["suite"] == KIND]
    if not rows:
        return []
    cfg = result["config"]
    caption = (
        f"Aggregation instances (Eq. 9; batch {cfg['instance_batch_size']} of {cfg['instance_channels']} fields, "
        f"{cfg['instance_group']}, {cfg['instance_size']} px, training mode): vs GroupConv = value / GroupConv's "
        "value at the same k (> 1: slower / more memory); saved = tensors autograd keeps for the backward pass."
    )
    return [instances_table(rows, caption)]


SUITE = Suite(
    name="instances",
    summary="the Eq. 9 instances GroupConv, E4Conv, GroupSelfAttention, AttentiveGroupConv at several k",
    cases=lambda config: list(config.instance_kernel_sizes),
    measure=_measure,
    tables=_tables,
    baselines={KIND: ("time_vs_groupconv", BASELINE)},
    check=_check,
)
