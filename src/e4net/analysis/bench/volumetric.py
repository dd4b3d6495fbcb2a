"""The ``volumes`` suite: E4 in 3-D against the 3-D group convolution of the same width, on voxel grids of O / Oh.

Two cases, each with its baseline measured in the same run:

* ``layer``: :class:`~e4net.nn.E4Conv` (Eq. 12 with k^3 dynamic kernels, ``r = 1``, ``s = 2``, the aggregation on
  the ``auto`` backend) and :class:`~e4net.nn.GroupConv` (Eq. 5 in 3-D, one ``conv3d``), ``C`` fields in and out,
  forward and forward+backward on ``(B, C, |A|, S, S, S)``; ratio ``vs_gconv`` = GroupConv time / time.
* ``train``: one SGD step (forward, cross-entropy, backward, update) of each registered model of
  ``volume_models`` (``e4net3d`` and its twin ``gcnn3d``) on a batch of ``digits3d``-shaped inputs; ratio
  ``vs_baseline`` = the last model's (the baseline's) step time / time, and images/s.

The issue's targets on the 2-core CPU (O, 8 fields, k = 3, 16^3): layer >= 5x, train step >= 3x; docs/3d.md has the
measured numbers and the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ... import models
from ...groups import resolve
from ...nn import E4Conv, GroupConv, set_backend
from .config import BenchConfig
from .machine import backend_label
from .measure import MemoryJob, layer_runs, measure
from .rows import Row, add_ratio
from .suite import Suite
from .table import Table, fmt, fmt_ratio, impl_cell

LAYER, TRAIN = "volumes-layer", "volumes-train"
GCONV = "GroupConv"


@dataclass
class VolumeRow(Row):
    """A row of the suite; ``images_per_s`` for train steps."""

    images_per_s: float | None = None


def _layer_case(config: BenchConfig) -> str:
    s = config.volume_size
    return f"{config.volume_group} C={config.volume_fields} k={config.volume_kernel_size} {s}x{s}x{s}"


def bench_volume_layer(config: BenchConfig, device: torch.device, memory_jobs: list[MemoryJob] | None) -> list[Row]:
    """E4Conv (backend ``auto``) and GroupConv of the same width, forward and forward+backward."""
    g = resolve(config.volume_group)
    c, k, s = config.volume_fields, config.volume_kernel_size, config.volume_size
    torch.manual_seed(0)
    x = torch.randn(config.volume_batch_size, c, g.order, s, s, s, device=device, requires_grad=True)
    e4 = set_backend(E4Conv(c, c, k, g, reduction=1, slices=2), "auto").to(device).train()
    gconv = GroupConv(c, c, k, g).to(device).train()
    case = _layer_case(config)
    rows: list[Row] = [VolumeRow(LAYER, case, backend_label("E4", "auto", device)), VolumeRow(LAYER, case, GCONV)]
    runs = [layer_runs(e4, x), layer_runs(gconv, x)]

    def ratios(rs):
        add_ratio(rs, GCONV, "fwdbwd_ms", "vs_gconv", inverse=True)
        add_ratio(rs, GCONV, "fwd_ms", "fwd_vs_gconv", inverse=True)

    measure(rows, [r[0] for r in runs], [r[1] for r in runs], config.repeats, device, memory_jobs, ratios)
    return rows


def bench_volume_train(config: BenchConfig, device: torch.device, memory_jobs: list[MemoryJob] | None) -> list[Row]:
    """One SGD step of every model of ``volume_models``; the last one is the baseline of the ratios."""
    names = list(config.volume_models)
    baseline = names[-1]
    case = " vs ".join(names)
    shape = tuple(models.model_spec(names[0]).input_shape)
    b = config.volume_train_batch_size
    torch.manual_seed(0)
    x = torch.randn(b, *shape, device=device)
    y = torch.randint(0, 10, (b,), device=device)
    rows: list[Row] = []
    fwds, steps = [], []
    for name in names:
        torch.manual_seed(0)
        model = models.create_model(name).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def fwd(model: nn.Module = model) -> torch.Tensor:
            return model(x)

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        rows.append(VolumeRow(TRAIN, case, name))
        fwds.append(fwd)
        steps.append(step)

    def ratios(rs):
        add_ratio(rs, baseline, "fwdbwd_ms", "vs_baseline", inverse=True)

    measure(rows, fwds, steps, config.repeats, device, memory_jobs, ratios)
    for r in rows:
        if r.fwdbwd_ms:
            r.images_per_s = b / (r.fwdbwd_ms / 1e3)  # type: ignore[attr-defined]
    return rows


def _check(config: BenchConfig) -> None:
    g = resolve(config.volume_group)
    if g.spatial_dims != 3:
        raise ValueError(f"volume group must act on voxel grids (O, Oh), got {config.volume_group!r}")
    for what in ("volume_fields", "volume_size", "volume_batch_size", "volume_train_batch_size"):
        if getattr(config, what) < 1:
            raise ValueError(f"{what.replace('_', ' ')} must be positive, got {getattr(config, what)}")
    if config.volume_kernel_size < 1 or config.volume_kernel_size % 2 == 0:
        raise ValueError(f"volume kernel size must be odd and positive, got {config.volume_kernel_size}")
    if len(config.volume_models) < 2:
        raise ValueError("volume models: name at least two models, the last one is the baseline")
    for name in config.volume_models:
        models.model_spec(name)  # a ValueError naming the registered models
    shapes = {tuple(models.model_spec(n).input_shape) for n in config.volume_models}
    if len(shapes) != 1:
        raise ValueError(f"volume models must share one input shape, got {sorted(shapes)}")


def _measure(case: str, config: BenchConfig, device: torch.device, jobs: list[MemoryJob]) -> list[Row]:
    if case == "layer":
        return bench_volume_layer(config, device, jobs)
    return bench_volume_train(config, device, jobs)


def _tables(result: dict[str, Any]) -> list[Table]:
    tables = []
    cfg = result["config"]
    rows = [r for r in result["rows"] if r["suite"] == LAYER]
    if rows:
        caption = f"3-D layer (batch {cfg['volume_batch_size']}): vs GroupConv = GroupConv time / time (> 1 is faster)."
        headers = ["layer", "implementation", "fwd ms", "fwd+bwd ms", "peak MiB", "fwd vs GroupConv", "vs GroupConv"]
        cells = [
            [
                r["case"],
                impl_cell(r),
                fmt(r["fwd_ms"]),
                fmt(r["fwdbwd_ms"]),
                fmt(r["peak_mb"], 0),
                fmt_ratio(r["ratios"].get("fwd_vs_gconv")),
                fmt_ratio(r["ratios"].get("vs_gconv")),
            ]  # fmt: skip
            for r in rows
        ]
        tables.append(Table(caption, headers, cells, [False, False] + [True] * 5))
    rows = [r for r in result["rows"] if r["suite"] == TRAIN]
    if rows:
        caption = (
            f"3-D train steps (batch {cfg['volume_train_batch_size']}, SGD): vs baseline = the last model's step "
            "time / time (> 1 is faster)."
        )
        headers = ["models", "model", "fwd ms", "step ms", "images/s", "peak MiB", "vs baseline"]
        cells = [
            [
                r["case"],
                impl_cell(r),
                fmt(r["fwd_ms"]),
                fmt(r["fwdbwd_ms"]),
                fmt(r["images_per_s"]),
                fmt(r["peak_mb"], 0),
                fmt_ratio(r["ratios"].get("vs_baseline")),
            ]  # fmt: skip
            for r in rows
        ]
        tables.append(Table(caption, headers, cells, [False, False] + [True] * 5))
    return tables


SUITE = Suite(
    name="volumes",
    summary="E4 in 3-D (O / Oh voxel grids): the E4 layer vs GroupConv of the same width, e4net3d vs gcnn3d train "
    "steps",
    cases=lambda config: ["layer", "train"],
    measure=_measure,
    tables=_tables,
    baselines={LAYER: ("vs_gconv", GCONV), TRAIN: ("vs_baseline", "gcnn3d")},
    check=_check,
)
