"""The ``train`` suite: one optimiser step (forward, cross-entropy, backward, SGD update) of registered models with
every E4 layer switched to each backend (:func:`e4net.nn.set_backend`); images/s and the throughput ratio against
the ``reference`` backend."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ... import models
from ...nn import E4Conv, set_backend
from .config import BenchConfig
from .machine import backend_label
from .measure import MemoryJob, measure
from .rows import Row, add_speedups
from .suite import Suite
from .table import Table, fmt, fmt_ratio, impl_cell

KIND = "train"
REFERENCE = "E4 reference"


@dataclass
class TrainRow(Row):
    """A train-step row: ``fwdbwd_ms`` is the whole step, ``images_per_s`` its throughput."""

    images_per_s: float | None = None


def switch_backend(model: nn.Module, backend: str) -> int:
    """:func:`e4net.nn.set_backend` (validated by :func:`e4net.backends.check_backend`); returns how many E4
    layers ``model`` has, i.e. how many were switched."""
    set_backend(model, backend)
    return sum(isinstance(m, E4Conv) for m in model.modules())


def bench_train_step(
    name: str,
    backends: Iterable[str],
    batch_size: int,
    device: torch.device,
    repeats: int,
    memory_jobs: list[MemoryJob] | None = None,
) -> list[TrainRow]:
    """One SGD step of model ``name`` per backend: median step time, images/s, peak memory, ratios to reference.
    A model that is not registered gives one row with a note (the other models still run)."""
    try:
        shape = tuple(models.model_spec(name).input_shape)
    except (KeyError, ValueError) as exc:
        return [TrainRow(KIND, name, "-", note=f"model not available: {exc}")]
    torch.manual_seed(0)
    x = torch.randn(batch_size, *shape, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    rows, fwds, steps = [], [], []
    for b in backends:
        label = backend_label("E4", b, device)
        torch.manual_seed(0)
        model = models.create_model(name).to(device).train()
        if switch_backend(model, b) == 0:
            label += " (no E4 layers)"
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def fwd(model: nn.Module = model) -> torch.Tensor:
            return model(x)

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        rows.append(TrainRow(KIND, name, label))
        fwds.append(fwd)
        steps.append(step)
    measure(rows, fwds, steps, repeats, device, memory_jobs, partial(add_speedups, baseline=REFERENCE))
    for r in rows:
        if r.fwdbwd_ms:
            r.images_per_s = batch_size / (r.fwdbwd_ms / 1e3)
    return rows


def _tables(result: dict[str, Any]) -> list[Table]:
    rows = [r for r in result["rows"] if r["suite"] == KIND]
    if not rows:
        return []
    caption = (
        f"Train steps (batch {result['config']['train_batch_size']}, SGD): "
        "throughput ratio = images/s / reference images/s."
    )
    headers = [
        "model",
        "implementation",
        "fwd ms",
        "step ms",
        "images/s",
        "throughput vs ref",
        "peak MiB",
        "mem vs ref",
    ]
    cells = [
        [
            r["case"],
            impl_cell(r),
            fmt(r["fwd_ms"]),
            fmt(r["fwdbwd_ms"]),
            fmt(r["images_per_s"]),
            fmt_ratio(r["ratios"].get("speedup_vs_ref")),
            fmt(r["peak_mb"], 0),
            fmt_ratio(r["ratios"].get("mem_vs_ref")),
        ]  # fmt: skip
        for r in rows
    ]
    return [Table(caption, headers, cells, [False, False] + [True] * 6)]


def _measure(name: str, config: BenchConfig, device: torch.device, jobs: list[MemoryJob]) -> list[Row]:
    batch_size = config.train_batch_size or config.batch_size
    return list(bench_train_step(name, config.backends, batch_size, device, config.repeats, jobs))


SUITE = Suite(
    name="train",
    summary="one SGD step of registered models per backend: step time, images/s, peak memory",
    cases=lambda config: list(config.models),
    measure=_measure,
    tables=_tables,
    baselines={KIND: ("speedup_vs_ref", REFERENCE)},
)
