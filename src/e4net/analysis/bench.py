"""Wall-clock benchmark of the E4 layer (Eq. 12) and of whole train steps, against baselines measured in the same run.

Suites:

* ``layers``: the E4 layers of E4-Net (16 fields, p4, k=5, r=1, s=2 at 28, 14, 7 px, Sec. 5.1) and of the
  E4-ResNet-18s (Sec. 5.2: k=3, r=2, ``s = fields / 2``; 32/64/128/256 fields on p4 and 22/44/88/176 on p4m
  at 32, 16, 8, 4 px). For each: ``E4Conv`` with the unfold ``reference`` backend, with each requested fast
  backend (``auto`` = what E4Conv picks on the device), a :class:`~e4net.nn.GroupConv` (Eq. 5) of the same
  width with k=3, and one with the E4 layer's k.
* ``train``: one optimiser step (forward, cross-entropy, backward, SGD update) of registered models
  (``e4net``, ``p4m-e4r18`` by default) with every E4 layer switched to each backend.

Every number is the median over ``repeats`` timed runs after one warm-up run, each timed run right after an
untimed run of the same implementation (steady state; CUDA: synchronised). Forward is
timed with autograd enabled, as in training. Peak memory is the extra memory one forward+backward (or train
step) needs on top of what exists before it (inputs, parameters):

* CUDA: ``torch.cuda.max_memory_allocated() - memory_allocated()`` before the run (caching-allocator exact);
* CPU: torch has no CPU allocator statistics, so we measure the process: glibc's ``mallopt`` fixes the mmap
  threshold at 64 KiB (freed tensors go back to the OS at once instead of staying in malloc's free lists),
  ``malloc_trim`` releases free heap pages, ``/proc/self/clear_refs`` resets the resident high-water mark, and the peak is ``VmHWM`` after the run minus
  ``VmRSS`` before it. This counts every allocation made during the run (torch, numba scratch, autograd
  graph), at page granularity. Where that is unavailable (non-Linux), peak memory is reported as ``None``.
  That allocator setting makes every allocation above 64 KiB a fresh ``mmap`` whose pages fault in on first
  touch, which would slow down allocation-heavy implementations more than others; :func:`run_benchmarks`
  therefore takes **all timings first**, under the process's allocator setting, and measures peak memory afterwards.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import _memory
from .._memory import cpu_allocator_tuned
from ..backends import available_backends, resolve_backend
from ..groups import resolve
from ..nn import E4Conv, GroupConv

SUITES = ("layers", "train")
DEFAULT_MODELS = ("e4net", "p4m-e4r18")


@dataclass(frozen=True)
class LayerCase:
    """One E4 layer shape: ``E4Conv(fields, fields, k, group, r, s)`` on ``size x size`` maps."""

    name: str
    group: str
    fields: int
    kernel_size: int
    reduction: int
    slices: int
    size: int


def e4net_layers() -> list[LayerCase]:
    """The E4 layers of E4-Net (Sec. 5.1): 16 fields, p4, k=5, r=1, s=2, at 28, 14 and 7 px."""
    return [LayerCase(f"E4-Net {s}px", "p4", 16, 5, 1, 2, s) for s in (28, 14, 7)]


def resnet_layers() -> list[LayerCase]:
    """The E4 layers of p4-/p4m-E4R18 (Sec. 5.2): k=3, r=2, s = fields / 2, fields doubling per stage."""
    cases = []
    for group, base in (("p4", 32), ("p4m", 22)):
        for i, size in enumerate((32, 16, 8, 4)):
            f = base * 2**i
            cases.append(LayerCase(f"{group}-E4R18 {size}px", group, f, 3, 2, f // 2, size))
    return cases


LAYER_SETS: dict[str, Callable[[], list[LayerCase]]] = {"e4net": e4net_layers, "resnet": resnet_layers}


@dataclass
class Row:
    """One measured implementation of one case."""

    suite: str
    case: str
    impl: str
    fwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    peak_mb: float | None = None
    images_per_s: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    note: str = ""
    bytes_fwd_mb: float | None = None  # aggregation rows: minimal DRAM traffic (MB = 1e6 bytes)
    bytes_fwdbwd_mb: float | None = None
    bound_fwd_ms: float | None = None  # that traffic at the device's memory bandwidth
    bound_fwdbwd_ms: float | None = None


# ---- measurement ------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    return median_times([fn], repeats, device, warmup)[0]


def median_times(fns: list[Callable[[], Any]], repeats: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Median seconds of each function, timed **interleaved** (round-robin over ``fns`` in every repeat).

    On a shared, noisy machine the load changes over time; interleaving exposes every implementation to the
    same conditions, so the ratios between them stay meaningful. Each timed call is preceded by one untimed call
    of the same function, so it runs in the steady state a training loop sees (the allocator's free lists and
    the caches hold what this implementation left, not what the previous one did); timing right after another
    implementation measured up to 20% more for the fast E4 layer.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            fn()
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


try:
    _LIBC: Any = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: no CPU peak-memory measurement
    _LIBC = None


def _fix_malloc_threshold() -> bool:
    """glibc: fixed 64 KiB mmap threshold so freed tensors leave the resident set immediately."""
    return _LIBC is not None and _memory.set_malloc_thresholds(64 * 1024, 64 * 1024)


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Extra peak memory (MiB) of one call of ``fn`` (see the module docstring for the method)."""
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if not _fix_malloc_threshold():
        return None
    try:
        _LIBC.malloc_trim(0)  # return free heap pages (e.g. freed before the threshold was fixed) to the OS
        base = _proc_status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        fn()
        return max(0, _proc_status_kb("VmHWM") - base) / 1024
    except OSError:
        return None


# ---- layers -----------------------------------------------------------------------------------------------------
def _layer_runs(module: nn.Module, x: torch.Tensor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    grad = None

    def fwd() -> torch.Tensor:
        return module(x)

    def fwdbwd() -> None:
        nonlocal grad
        y = module(x)
        if grad is None or grad.shape != y.shape:
            grad = torch.randn_like(y)
        y.backward(grad)
        module.zero_grad(set_to_none=True)
        x.grad = None

    return fwd, fwdbwd


def bench_layer(
    case: LayerCase,
    backends: Iterable[str],
    batch_size: int,
    device: torch.device,
    repeats: int,
    memory_jobs: list[MemoryJob] | None = None,
) -> list[Row]:
    """E4Conv on each backend, GroupConv k=3 and GroupConv k=case.kernel_size, with ratios to the reference."""
    g = resolve(case.group)
    torch.manual_seed(0)
    x = torch.randn(batch_size, case.fields, g.order, case.size, case.size, device=device, requires_grad=True)
    impls: list[tuple[str, Callable[[], nn.Module]]] = []
    for b in backends:
        label = f"E4 {b}" if b != "auto" else f"E4 auto={resolve_backend('auto', device)}"
        impls.append(
            (
                label,
                lambda b=b: E4Conv(
                    case.fields, case.fields, case.kernel_size, g, case.reduction, case.slices, backend=b
                ),
            )
        )
    impls.append(("GroupConv k=3", lambda: GroupConv(case.fields, case.fields, 3, g)))
    if case.kernel_size != 3:
        impls.append(
            (f"GroupConv k={case.kernel_size}", lambda: GroupConv(case.fields, case.fields, case.kernel_size, g))
        )
    rows = [Row("layers", case.name, label) for label, _ in impls]
    modules = [make().to(device).train() for _, make in impls]
    runs = [_layer_runs(m, x) for m in modules]
    _measure(
        rows, [r[0] for r in runs], [r[1] for r in runs], repeats, device, memory_jobs, "E4 reference", "GroupConv k=3"
    )
    return rows


@dataclass
class MemoryJob:
    """Peak-memory measurements of one group of rows, deferred until every timing is done (module docstring)."""

    rows: list[Row]
    fns: list[tuple[int, Callable[[], Any]]]
    reference: str
    gconv: str | None

    def run(self, device: torch.device) -> None:
        for i, fn in self.fns:
            self.rows[i].peak_mb = peak_memory_mb(fn, device)
        _add_ratios(self.rows, self.reference, self.gconv)


def _measure(
    rows: list[Row],
    fwds: list[Callable],
    fwdbwds: list[Callable],
    repeats: int,
    device: torch.device,
    memory_jobs: list[MemoryJob] | None,
    reference: str,
    gconv: str | None,
) -> None:
    """Interleaved forward and forward+backward medians, then each one's peak memory (now, or appended to
    ``memory_jobs`` to be run later), then the ratios; failures go to ``note``."""
    ok = list(range(len(rows)))
    for i in list(ok):  # one trial run each, so that e.g. an out-of-memory reference does not stop the others
        try:
            fwdbwds[i]()
        except (RuntimeError, MemoryError) as exc:
            rows[i].note = f"failed: {str(exc).splitlines()[0][:80]}"
            ok.remove(i)
    for i, t in zip(ok, median_times([fwds[i] for i in ok], repeats, device)):
        rows[i].fwd_ms = 1e3 * t
    for i, t in zip(ok, median_times([fwdbwds[i] for i in ok], repeats, device, warmup=0)):
        rows[i].fwdbwd_ms = 1e3 * t
    job = MemoryJob(rows, [(i, fwdbwds[i]) for i in ok], reference, gconv)
    if memory_jobs is None:
        job.run(device)
    else:
        _add_ratios(rows, reference, gconv)
        memory_jobs.append(job)


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
) -> list[Row]:
    """The aggregation alone (``e4net.backends.aggregate`` on given v and kernels), against its bandwidth bound."""
    from ..backends import aggregate

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
        label = f"agg {b}" if b != "auto" else f"agg auto={resolve_backend('auto', device)}"
        row = Row("aggregation", case.name, label, bytes_fwd_mb=fwd_b / 1e6, bytes_fwdbwd_mb=all_b / 1e6)
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
    _measure(rows, fwds, fwdbwds, repeats, device, memory_jobs, "agg reference", None)
    for r in rows:
        if r.bound_fwd_ms and r.fwd_ms:
            r.ratios["fwd_vs_bound"] = r.fwd_ms / r.bound_fwd_ms
        if r.bound_fwdbwd_ms and r.fwdbwd_ms:
            r.ratios["fwdbwd_vs_bound"] = r.fwdbwd_ms / r.bound_fwdbwd_ms
    return rows


# Peak DRAM bandwidth (GB/s) of common GPUs, for the aggregation bound; others need --bandwidth.
GPU_BANDWIDTH_GBS = {"H200": 4800.0, "H100 SXM": 3350.0, "H100 PCIe": 2000.0, "A100-SXM4-80GB": 2039.0, "A100": 1555.0}


def default_bandwidth(device: torch.device) -> float | None:
    """The memory bandwidth used for the bound: looked up by GPU name (``GPU_BANDWIDTH_GBS``), ``None`` on CPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, bw in GPU_BANDWIDTH_GBS.items():
        if key in name:
            return bw
    return None


def _add_ratios(rows: list[Row], reference: str, gconv: str | None) -> None:
    """``speedup_vs_ref`` = reference time / time (fwd+bwd; fwd too), ``mem_vs_ref`` = peak / reference peak,
    ``vs_gconv3`` = GroupConv k=3 fwd+bwd time / time (> 1: faster than the GroupConv)."""
    by = {r.impl: r for r in rows}
    ref = by.get(reference)
    gc3 = by.get(gconv) if gconv else None
    for r in rows:
        if ref and ref.fwdbwd_ms and r.fwdbwd_ms:
            r.ratios["speedup_vs_ref"] = ref.fwdbwd_ms / r.fwdbwd_ms
        if ref and ref.fwd_ms and r.fwd_ms:
            r.ratios["fwd_speedup_vs_ref"] = ref.fwd_ms / r.fwd_ms
        if ref and ref.peak_mb and r.peak_mb is not None:
            r.ratios["mem_vs_ref"] = r.peak_mb / ref.peak_mb
        if gc3 and gc3.fwdbwd_ms and r.fwdbwd_ms:
            r.ratios["vs_gconv3"] = gc3.fwdbwd_ms / r.fwdbwd_ms


# ---- train steps ------------------------------------------------------------------------------------------------
def set_backend(model: nn.Module, backend: str) -> int:
    """Switch every E4 layer of ``model`` to ``backend``; returns how many were switched."""
    n = 0
    for m in model.modules():
        if isinstance(m, E4Conv):
            m.backend = backend
            n += 1
    return n


def bench_train_step(
    name: str,
    backends: Iterable[str],
    batch_size: int,
    device: torch.device,
    repeats: int,
    memory_jobs: list[MemoryJob] | None = None,
) -> list[Row]:
    """One SGD step of model ``name`` per backend: median step time, images/s, peak memory, ratios to reference."""
    from ..models import create_model
    from ..models.registry import model_spec

    rows = []
    try:
        spec = model_spec(name)
        shape = tuple(spec.input_shape)
    except (KeyError, ValueError) as exc:
        return [Row("train", name, "-", note=f"model not available: {exc}")]
    torch.manual_seed(0)
    x = torch.randn(batch_size, *shape, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    fwds, steps = [], []
    for b in backends:
        label = f"E4 {b}" if b != "auto" else f"E4 auto={resolve_backend('auto', device)}"
        torch.manual_seed(0)
        model = create_model(name).to(device).train()
        if set_backend(model, b) == 0:
            label += " (no E4 layers)"
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def fwd(model: nn.Module = model) -> torch.Tensor:
            return model(x)

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        rows.append(Row("train", name, label))
        fwds.append(fwd)
        steps.append(step)
    _measure(rows, fwds, steps, repeats, device, memory_jobs, "E4 reference", None)
    for r in rows:
        if r.fwdbwd_ms:
            r.images_per_s = batch_size / (r.fwdbwd_ms / 1e3)
    return rows


# ---- driver -----------------------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "backends": available_backends(),
        "malloc": "tuned (e4net.tune_cpu_allocator)" if cpu_allocator_tuned() else "default",
    }
    for mod in ("numba", "triton"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_benchmarks(
    suites: Iterable[str] = SUITES,
    device: str | torch.device = "cpu",
    backends: Iterable[str] = ("reference", "auto"),
    layer_sets: Iterable[str] = ("e4net", "resnet"),
    models: Iterable[str] = DEFAULT_MODELS,
    batch_size: int = 128,
    train_batch_size: int | None = None,
    repeats: int = 5,
    progress: bool = True,
    bandwidth_gbs: float | None = None,
) -> dict[str, Any]:
    """Run the requested suites; returns ``{"machine": ..., "config": ..., "rows": [Row as dict, ...]}``."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    suites, backends, layer_sets, models = list(suites), list(backends), list(layer_sets), list(models)
    for s in suites:
        if s not in SUITES:
            raise ValueError(f"unknown suite {s!r}; choose from {', '.join(SUITES)}")
    for s in layer_sets:
        if s not in LAYER_SETS:
            raise ValueError(f"unknown layer set {s!r}; choose from {', '.join(LAYER_SETS)}")
    for b in backends:
        if b not in available_backends():
            raise ValueError(f"unknown backend {b!r}; available: {', '.join(available_backends())}")
    if repeats < 1 or batch_size < 1:
        raise ValueError("repeats and batch size must be positive")
    if bandwidth_gbs is None:
        bandwidth_gbs = default_bandwidth(device)
    elif bandwidth_gbs <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth_gbs}")
    machine = machine_info(device)  # before the memory measurements change the allocator setting
    tasks: list[tuple[str, Any]] = []
    if "layers" in suites:
        tasks += [("layers", c) for s in layer_sets for c in LAYER_SETS[s]()]
    if "train" in suites:
        tasks += [("train", m) for m in models]
    from tqdm import tqdm

    rows: list[Row] = []
    jobs: list[MemoryJob] = []
    for kind, item in tqdm(tasks, desc="e4net bench", disable=not progress, unit="case"):
        if kind == "layers":
            rows += bench_layer(item, backends, batch_size, device, repeats, jobs)
            rows += bench_aggregation(item, backends, batch_size, device, repeats, bandwidth_gbs, jobs)
        else:
            rows += bench_train_step(item, backends, train_batch_size or batch_size, device, repeats, jobs)
    for job in tqdm(jobs, desc="peak memory", disable=not progress, unit="case"):
        job.run(device)
    config = {
        "suites": suites,
        "backends": backends,
        "layer_sets": layer_sets,
        "models": models,
        "batch_size": batch_size,
        "train_batch_size": train_batch_size or batch_size,
        "repeats": repeats,
        "bandwidth_gbs": bandwidth_gbs,
    }
    return {"machine": machine, "config": config, "rows": [asdict(r) for r in rows]}


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def to_markdown(result: dict[str, Any]) -> str:
    """Markdown tables (one per suite) with the machine line on top."""
    m, cfg = result["machine"], result["config"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads"
    lines = [
        f"Device: {m['device']} ({where}); torch {m['torch']}, numba {m.get('numba')}, triton {m.get('triton')}; "
        f"malloc {m.get('malloc', 'default')}; median of {cfg['repeats']} repeats.",
        "",
    ]
    layer_rows = [r for r in result["rows"] if r["suite"] == "layers"]
    if layer_rows:
        lines += [
            f"Layers (batch {cfg['batch_size']}): speedup = reference time / time (fwd+bwd); "
            "vs GConv3 = GroupConv k=3 time / time (> 1 is faster); mem = peak / reference peak.",
            "",
            "| layer | implementation | fwd ms | fwd+bwd ms | peak MiB | speedup fwd | speedup fwd+bwd | vs GConv3 | mem vs ref |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in layer_rows:
            q = r["ratios"]
            lines.append(
                f"| {r['case']} | {r['impl']}{' ' + r['note'] if r['note'] else ''} | {_fmt(r['fwd_ms'])} | "
                f"{_fmt(r['fwdbwd_ms'])} | {_fmt(r['peak_mb'], 0)} | {_ratio(q.get('fwd_speedup_vs_ref'))} | "
                f"{_ratio(q.get('speedup_vs_ref'))} | {_ratio(q.get('vs_gconv3'))} | {_ratio(q.get('mem_vs_ref'))} |"
            )
        lines.append("")
    agg_rows = [r for r in result["rows"] if r["suite"] == "aggregation"]
    if agg_rows:
        bw = cfg.get("bandwidth_gbs")
        lines += [
            f"Aggregation alone (batch {cfg['batch_size']}, stride 1): MB = minimal DRAM traffic (every tensor once); "
            + (f"bound = MB / {bw:g} GB/s; x bound = time / bound." if bw else "no bandwidth given: no bound."),
            "",
            "| layer | backend | fwd ms | fwd+bwd ms | speedup fwd+bwd | MB fwd | MB fwd+bwd | bound fwd ms | "
            "bound fwd+bwd ms | fwd x bound | fwd+bwd x bound |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in agg_rows:
            q = r["ratios"]
            lines.append(
                f"| {r['case']} | {r['impl']}{' ' + r['note'] if r['note'] else ''} | {_fmt(r['fwd_ms'], 2)} | "
                f"{_fmt(r['fwdbwd_ms'], 2)} | {_ratio(q.get('speedup_vs_ref'))} | {_fmt(r['bytes_fwd_mb'])} | "
                f"{_fmt(r['bytes_fwdbwd_mb'])} | {_fmt(r['bound_fwd_ms'], 3)} | {_fmt(r['bound_fwdbwd_ms'], 3)} | "
                f"{_ratio(q.get('fwd_vs_bound'))} | {_ratio(q.get('fwdbwd_vs_bound'))} |"
            )
        lines.append("")
    train_rows = [r for r in result["rows"] if r["suite"] == "train"]
    if train_rows:
        lines += [
            f"Train steps (batch {cfg['train_batch_size']}, SGD): throughput ratio = images/s / reference images/s.",
            "",
            "| model | implementation | fwd ms | step ms | images/s | throughput vs ref | peak MiB | mem vs ref |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in train_rows:
            q = r["ratios"]
            lines.append(
                f"| {r['case']} | {r['impl']}{' ' + r['note'] if r['note'] else ''} | {_fmt(r['fwd_ms'])} | "
                f"{_fmt(r['fwdbwd_ms'])} | {_fmt(r['images_per_s'])} | {_ratio(q.get('speedup_vs_ref'))} | "
                f"{_fmt(r['peak_mb'], 0)} | {_ratio(q.get('mem_vs_ref'))} |"
            )
        lines.append("")
    return "\n".join(lines)
