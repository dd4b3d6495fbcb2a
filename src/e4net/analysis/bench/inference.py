"""The ``inference`` suite: deployment latency of registered models in three runtimes, at each batch size.

* ``eval``: the e4net model in eval mode under ``torch.inference_mode`` (default aggregation backend: numba on CPU;
  the lifting / group convolutions reuse their cached filter banks);
* ``exported``: :func:`e4net.export` of it (standard PyTorch operations, batch norms folded), eager;
* ``onnxruntime``: that module as ONNX (:mod:`e4net.deploy.onnx`) in onnxruntime on the CPU with as many threads as
  torch uses, idle threads not spinning (rows only when the ``export`` extra is installed; no peak memory: its
  arena is reserved at the first call).

One case per batch size; its rows are every (model, runtime) pair, timed interleaved (medians), with the peak memory
of one call. Ratios: ``speedup_vs_baseline`` = the baseline's latency / the row's (> 1: faster), where the baseline
is :data:`BASELINE` (p4cnn in e4net eval mode, always measured), and ``speedup_vs_eval`` against the same model's
e4net eval row. Inference has no backward pass: ``fwdbwd_ms`` stays empty.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ... import models
from ...deploy import export
from .config import BenchConfig
from .measure import MemoryJob
from .rows import Row, add_ratio
from .suite import Suite
from .table import Table, fmt, fmt_ratio, impl_cell
from .timing import median_times

KIND = "inference"
RUNTIMES = ("eval", "exported", "onnxruntime")
BASELINE_MODEL = "p4cnn"
BASELINE = f"{BASELINE_MODEL} eval"


@dataclass
class InferenceRow(Row):
    """One model in one runtime at one batch size: ``fwd_ms`` is the latency of one call, ``images_per_s``."""

    model: str = ""
    runtime: str = ""
    batch: int = 0
    images_per_s: float | None = None


def onnx_available() -> bool:
    """Whether the ``export`` extra (onnx, onnxscript, onnxruntime) is installed."""
    from ...deploy.onnx import require_onnx
    from ...errors import E4NetError

    try:
        require_onnx()
    except E4NetError:
        return False
    return True


def _runners(name: str, runtimes: Sequence[str], batch: int, workdir: Path) -> list[tuple[str, Callable[[], Any]]]:
    torch.manual_seed(0)
    model = models.create_model(name).eval()
    shape = models.model_spec(name).input_shape
    x = torch.randn(batch, *shape)
    out: list[tuple[str, Callable[[], Any]]] = []

    def eager(m: torch.nn.Module) -> Callable[[], Any]:
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return m(x)

        return run

    plain = export(model) if {"exported", "onnxruntime"} & set(runtimes) else None
    for runtime in runtimes:
        if runtime == "eval":
            out.append((runtime, eager(model)))
        elif runtime == "exported":
            out.append((runtime, eager(plain)))
        elif runtime == "onnxruntime" and onnx_available():
            from ...deploy.onnx import onnx_session, run_onnx, to_onnx

            path = to_onnx(plain, shape, workdir / f"{name}.onnx")
            session = onnx_session(path, threads=torch.get_num_threads(), spin=False)  # shares the cores
            arr = x.numpy()
            out.append((runtime, lambda s=session, a=arr: run_onnx(s, a)))
    return out


def _ratios(rows: Sequence[Row]) -> None:
    add_ratio(rows, BASELINE, "fwd_ms", "speedup_vs_baseline", inverse=True)
    for r in rows:
        own = next((o for o in rows if o.impl == f"{r.model} eval"), None)  # type: ignore[attr-defined]
        if own is not None and own.fwd_ms and r.fwd_ms:
            r.ratios["speedup_vs_eval"] = own.fwd_ms / r.fwd_ms


def bench_inference(
    batch: int, names: Sequence[str], runtimes: Sequence[str], repeats: int, memory_jobs: list[MemoryJob] | None = None
) -> list[InferenceRow]:
    """Every model of ``names`` (and the baseline) in every runtime at batch ``batch`` on the CPU."""
    cpu = torch.device("cpu")
    plan = [(name, list(runtimes)) for name in names]
    if BASELINE_MODEL not in names:
        plan.insert(0, (BASELINE_MODEL, ["eval"]))
    rows: list[InferenceRow] = []
    fns: list[Callable[[], Any]] = []
    with tempfile.TemporaryDirectory(prefix="e4net-bench-") as tmp:
        for name, wanted in plan:
            for runtime, fn in _runners(name, wanted, batch, Path(tmp)):
                impl = f"{name} {runtime}"
                rows.append(InferenceRow(KIND, f"batch {batch}", impl, model=name, runtime=runtime, batch=batch))
                fns.append(fn)
        for fn in fns:
            fn()  # trial run (first-call costs: filter banks, session warm-up)
        for row, t in zip(rows, median_times(fns, repeats, cpu)):
            row.fwd_ms = 1e3 * t
            row.images_per_s = batch / t
        # onnxruntime allocates from an arena reserved at its first call: a call's peak is not measurable ("-")
        measured = [(i, fn) for i, fn in enumerate(fns) if rows[i].runtime != "onnxruntime"]
        job = MemoryJob(rows, measured, _ratios)  # type: ignore[arg-type]
        if memory_jobs is None:
            job.run(cpu)
        else:
            _ratios(rows)
            memory_jobs.append(job)
    return rows


def _check(config: BenchConfig) -> None:
    unknown = [r for r in config.inference_runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown inference runtime(s) {unknown}; known: {', '.join(RUNTIMES)}")
    if "eval" not in config.inference_runtimes:
        raise ValueError("the inference runtimes must include 'eval' (the baseline of the ratios)")
    for name in config.inference_models:
        models.model_spec(name)
    if any(b < 1 for b in config.inference_batch_sizes):
        raise ValueError(f"inference batch sizes must be positive, got {list(config.inference_batch_sizes)}")
    if "inference" in config.suites and torch.device(config.device).type != "cpu":
        raise ValueError("the inference suite runs on the CPU (onnxruntime's CPU provider); use --device cpu")


def _measure(batch: int, config: BenchConfig, device: torch.device, jobs: list[MemoryJob]) -> list[Row]:
    return list(bench_inference(batch, config.inference_models, config.inference_runtimes, config.repeats, jobs))


def _tables(result: dict[str, Any]) -> list[Table]:
    rows = [r for r in result["rows"] if r["suite"] == KIND]
    if not rows:
        return []
    caption = (
        "Inference on the CPU (one call, torch.inference_mode for PyTorch): latency, images/s, speed-up against "
        f"{BASELINE} at the same batch (> 1: faster) and against the same model's e4net eval; peak = one call "
        "(onnxruntime: -, its arena is reserved at the first call)."
    )
    headers = ["batch", "implementation", "latency ms", "images/s", f"vs {BASELINE}", "vs own eval", "peak MiB"]
    cells = [
        [
            str(r["batch"]),
            impl_cell(r),
            fmt(r["fwd_ms"], 2),
            fmt(r["images_per_s"], 0),
            fmt_ratio(r["ratios"].get("speedup_vs_baseline")),
            fmt_ratio(r["ratios"].get("speedup_vs_eval")),
            fmt(r["peak_mb"], 0),
        ]
        for r in rows
    ]
    return [Table(caption, headers, cells, [True, False] + [True] * 5)]


SUITE = Suite(
    name=KIND,
    summary="deployment latency: e4net eval, the exported PyTorch module and onnxruntime per model and batch (CPU)",
    cases=lambda config: list(config.inference_batch_sizes),
    measure=_measure,
    tables=_tables,
    baselines={KIND: ("speedup_vs_baseline", BASELINE)},
    check=_check,
)
