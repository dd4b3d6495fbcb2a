"""The ``models`` suite: do fewer MACs mean faster? Each E4 model of the paper against its group-convolution twin
(E4-Net against P4CNN, Table 1; p4-/p4m-E4R18 against p4-/p4m-R18, Table 4), whole train steps and inference, in one
process, interleaved, with the twin as the baseline of the ratios.

* A case is ``"E4:TWIN@BATCH"`` (registered model names, see ``e4net models``), e.g. ``"e4net:p4cnn@128"``.
* Rows: the twin (baseline), the E4 model (e4net's default backend), and, for E4-Net, the authors' E4-Net
  (``LingshenHe/Efficient-Equivariant-Network``, ``model/architecture.py::E4_net`` with their training script's
  defaults) when ``authors_code`` names a checkout of their repository. Their code is not part of e4net; without a
  path that row is left out.
* Columns: train step (forward, cross-entropy, backward, SGD update) and inference (eval mode, ``inference_mode``),
  as ms and images/s; the MACs of one image (:func:`e4net.count`); ratios against the twin: train and inference
  speed-ups and the MAC ratio they would reach if wall-clock followed MACs.
* Where the time goes: one profiled train step of each of our E4 models, its self CPU time by kind of operation
  (the fused aggregation, GEMMs, convolutions, norms, pooling, dropout, activations, the rest).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ... import models
from ..count import count
from .config import BenchConfig
from .measure import MemoryJob
from .rows import Row, add_ratio
from .suite import Suite
from .table import Table, fmt, fmt_ratio, impl_cell
from .timing import median_times

KIND = "models"
BREAKDOWN = "models_profile"
TWIN = "G-CNN twin"
OURS = "e4net E4"
AUTHORS = "authors' E4-Net"

CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("E4 aggregation", ("aggregate",)),
    (
        "GEMM (1x1 maps, linear)",
        ("bmm", "aten::mm", "addmm", "matmul", "_sharedweightbmm", "_sharedinputpair", "linear_pointwise"),
    ),
    ("convolution", ("convolution", "conv2d", "conv3d")),
    ("norms", ("batch_norm", "group_norm", "_normrelu")),  # _normrelu: a norm with its ReLU fused (norm_relu)
    ("pooling", ("pool", "_windowmax")),
    ("dropout", ("bernoulli", "dropout")),
    ("activation", ("relu", "clamp_min", "threshold")),
)
"""Kinds of operations of the time breakdown: the first whose pattern occurs in an op's name (lower case) takes it."""


@dataclass(frozen=True)
class Pair:
    """One case: an E4 model, its twin, the batch size."""

    e4: str
    twin: str
    batch_size: int

    @classmethod
    def parse(cls, text: str) -> Pair:
        try:
            models_part, batch = text.split("@") if "@" in text else (text, "128")
            e4, twin = models_part.split(":")
            pair = cls(e4.strip(), twin.strip(), int(batch))
        except ValueError:
            raise ValueError(f"a model pair is 'E4:TWIN@BATCH' (e.g. e4net:p4cnn@128), got {text!r}") from None
        if pair.batch_size < 1:
            raise ValueError(f"model pair {text!r}: the batch size must be positive")
        return pair

    def __str__(self) -> str:
        return f"{self.e4} vs {self.twin} @{self.batch_size}"


@dataclass
class ModelRow(Row):
    """``fwd_ms`` is one inference batch, ``fwdbwd_ms`` one train step; ``model`` the registered name (or the
    authors'); ``macs`` per image; ``shares``: the profiled train step's share of time per kind of operation."""

    model: str = ""
    macs: int | None = None
    train_images_per_s: float | None = None
    infer_images_per_s: float | None = None
    shares: dict[str, float] = field(default_factory=dict)


def load_authors_e4net(path: str | Path) -> nn.Module:
    """The authors' E4-Net from a checkout of their repository (``model/architecture.py``), with the defaults of
    their ``train_mnist.py`` (k=5, groups=8, reduction 1, dropout 0.2). Imported under a private package name, so it
    cannot shadow anything of the caller's."""
    root = Path(path).expanduser()
    init = root / "model" / "__init__.py"
    if not init.is_file():
        raise ValueError(f"authors' code: {root} is not a checkout of LingshenHe/Efficient-Equivariant-Network "
                         f"(no model/__init__.py)")  # fmt: skip
    name = "_e4net_authors_model"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    architecture = importlib.import_module(f"{name}.architecture")
    return architecture.E4_net(5, 8, 1, 0.2)


def _step_and_infer(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def infer() -> torch.Tensor:
        model.eval()
        with torch.inference_mode():
            return model(x)

    return step, infer


def categorize(name: str) -> str:
    """The kind of operation of a profiler event name (:data:`CATEGORIES`), ``"other"`` if none matches."""
    low = name.lower()
    for label, patterns in CATEGORIES:
        if any(p in low for p in patterns):
            return label
    return "other"


def time_shares(step: Any, steps: int = 2) -> dict[str, float]:
    """Self CPU time of ``steps`` calls of ``step`` by kind of operation, as fractions of their total."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        kind = categorize(event.key)
        totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def bench_pair(
    pair: Pair, device: torch.device, repeats: int, authors_code: str | None, jobs: list[MemoryJob] | None = None
) -> list[ModelRow]:
    """Train step and inference of the twin, our E4 model and (E4-Net only, with ``authors_code``) the authors'."""
    shape = tuple(models.model_spec(pair.e4).input_shape)
    twin_shape = tuple(models.model_spec(pair.twin).input_shape)
    if shape != twin_shape:
        raise ValueError(f"model pair {pair}: input shapes differ ({shape} vs {twin_shape})")
    torch.manual_seed(0)
    x = torch.randn(pair.batch_size, *shape, device=device)
    y = torch.randint(0, 10, (pair.batch_size,), device=device)
    entries: list[tuple[str, str, nn.Module]] = [
        (TWIN, pair.twin, models.create_model(pair.twin)),
        (OURS, pair.e4, models.create_model(pair.e4)),
    ]
    if authors_code and pair.e4 == "e4net":
        entries.append((AUTHORS, "E4_net (authors' code)", load_authors_e4net(authors_code)))
    rows, steps, infers = [], [], []
    for impl, name, model in entries:
        model = model.to(device)
        # e4net.count sees e4net's layers and torch's convolutions / linears; the authors' E4 layers compute with
        # other ops (unfold, einsum), so their MACs are not counted (shown as "-").
        macs = count(model, shape).macs if impl != AUTHORS else None
        step, infer = _step_and_infer(model, x, y)
        rows.append(ModelRow(KIND, str(pair), impl, model=name, macs=macs))
        steps.append(step)
        infers.append(infer)
    for fn in steps:
        fn()  # trial runs (compilation, allocator) before any timing
    for i, t in enumerate(median_times(infers, repeats, device)):
        rows[i].fwd_ms = 1e3 * t
    for i, t in enumerate(median_times(steps, repeats, device)):
        rows[i].fwdbwd_ms = 1e3 * t
    for r in rows:
        r.train_images_per_s = pair.batch_size / (r.fwdbwd_ms / 1e3)
        r.infer_images_per_s = pair.batch_size / (r.fwd_ms / 1e3)
    if device.type == "cpu":
        rows[1].shares = time_shares(steps[1])

    def ratios(rs: list[ModelRow]) -> None:
        add_ratio(rs, TWIN, "fwdbwd_ms", "train_vs_twin", inverse=True)
        add_ratio(rs, TWIN, "fwd_ms", "infer_vs_twin", inverse=True)
        add_ratio(rs, TWIN, "macs", "macs_vs_twin", inverse=True)
        add_ratio(rs, TWIN, "peak_mb", "mem_vs_twin")

    job = MemoryJob(rows, list(enumerate(steps)), ratios)
    if jobs is None:
        job.run(device)
    else:
        ratios(rows)
        jobs.append(job)
    return rows


def _tables(result: dict[str, Any]) -> list[Table]:
    rows = [r for r in result["rows"] if r["suite"] == KIND]
    if not rows:
        return []
    caption = (
        "Models against their G-CNN twins (train step: forward, loss, backward, SGD; inference: eval mode). "
        "Ratios against the twin: speed-ups (> 1: faster) and the MAC ratio wall-clock would follow."
    )
    headers = ["case", "implementation", "model", "MMACs", "train ms", "train img/s", "train vs twin", "infer ms",
               "infer img/s", "infer vs twin", "MACs: twin / model", "peak MiB"]  # fmt: skip
    cells = [
        [
            r["case"],
            impl_cell(r),
            r["model"],
            fmt(r["macs"] / 1e6 if r["macs"] else None, 1),
            fmt(r["fwdbwd_ms"]),
            fmt(r["train_images_per_s"], 0),
            fmt_ratio(r["ratios"].get("train_vs_twin")),
            fmt(r["fwd_ms"]),
            fmt(r["infer_images_per_s"], 0),
            fmt_ratio(r["ratios"].get("infer_vs_twin")),
            fmt_ratio(r["ratios"].get("macs_vs_twin")),
            fmt(r["peak_mb"], 0),
        ]  # fmt: skip
        for r in rows
    ]
    tables = [Table(caption, headers, cells, [False, False, False] + [True] * 9)]
    profiled = [r for r in rows if r["shares"]]
    if profiled:
        kinds = [label for label, _ in CATEGORIES] + ["other"]
        cells = [[f"{r['model']} @{r['case'].rsplit('@', 1)[1]}"] + [f"{100 * r['shares'].get(k, 0.0):.0f}%" for k in kinds]
                 for r in profiled]  # fmt: skip
        tables.append(Table("Where the E4 model's train step spends its time (self CPU time, torch.profiler):",
                            ["model", *kinds], cells, [False] + [True] * len(kinds)))  # fmt: skip
    return tables


def _check(config: BenchConfig) -> None:
    if "models" not in config.suites:
        return
    for text in config.model_pairs:
        pair = Pair.parse(text)
        for name in (pair.e4, pair.twin):
            models.model_spec(name)  # a clear error for an unknown name
    if config.authors_code is not None:
        init = Path(config.authors_code).expanduser() / "model" / "__init__.py"
        if not init.is_file():
            raise ValueError(f"--authors-code {config.authors_code}: not a checkout of the authors' repository "
                             f"(no model/__init__.py)")  # fmt: skip


def _measure(text: str, config: BenchConfig, device: torch.device, jobs: list[MemoryJob]) -> list[Row]:
    return list(bench_pair(Pair.parse(text), device, config.repeats, config.authors_code, jobs))


SUITE = Suite(
    name="models",
    summary="each E4 model against its G-CNN twin: train step and inference images/s, MACs, where the time goes",
    cases=lambda config: list(config.model_pairs),
    measure=_measure,
    tables=_tables,
    baselines={KIND: ("train_vs_twin", TWIN)},
    check=_check,
)
