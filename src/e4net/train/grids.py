"""The grids of runs behind the paper's tables and Fig. 2, with the paper's numbers beside each row.

Each :class:`Run` is one configuration (model, data set, model hyper-parameters, training-set size); ``e4net
reproduce`` trains it once per seed. The rows, and the paper's numbers beside them (:class:`PaperValue`), are the
rows of :mod:`e4net.paper`: Table 1 and Table 4 are registered models, Tables 2 and 3 are overrides of ``e4net``
(:func:`e4net.paper.ablations`). Configurations that coincide (the E4-Net baseline is a row of Tables 1, 2 and 3:
``concat=both``, ``s=2``, ``r=1``, ``k=5`` are its defaults) share their runs. Fig. 2's numbers are in an appendix
that is not part of the paper's text; only its 5k-per-class end (= Table 4, the full training set) is quoted.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models import create_model, list_models, model_spec
from ..paper import PaperRow, ablations, rows


@dataclass(frozen=True)
class PaperValue:
    """The paper's reported numbers for a row on one data set (params and MACs as counts; its "FLOPs" are MACs)."""

    test_error: float | None
    std: float | None
    params: float | None
    macs: float | None

    @classmethod
    def of(cls, row: PaperRow, dataset: str | None = None) -> PaperValue:
        """The numbers of ``row`` with its test error on ``dataset`` (the row's own data set by default; Table 4
        also has ``"cifar100"``)."""
        err, std = row.error(dataset)
        return cls(err, std, row.params, row.macs)


@dataclass(frozen=True)
class Run:
    label: str
    model: str
    dataset: str
    model_args: dict[str, Any] = field(default_factory=dict)
    train_per_class: int | None = None
    paper: PaperValue | None = None

    @property
    def run_id(self) -> str:
        parts = [self.model, self.dataset]
        parts += [f"{k}={v}" for k, v in sorted(self.model_args.items())]
        if self.train_per_class:
            parts.append(f"n{self.train_per_class}")
        return "_".join(str(p) for p in parts)

    def __hash__(self) -> int:
        return hash(self.run_id)


#: Training images per class of the Fig. 2 grid (Sec. 5.2, "Data Efficiency"); 5k is the full set of Table 4.
FIG2_SIZES = (1000, 2000, 3000, 4000, 5000)


def _canonical_args(model: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Drop overrides equal to the model's defaults, so that equal configurations share their runs."""
    if not args:
        return {}
    if model not in list_models():
        return dict(args)
    spec = model_spec(model)
    defaults = {
        k: p.default
        for k, p in inspect.signature(type(create_model(model)).__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    defaults.update(spec.defaults)
    return {k: v for k, v in args.items() if k not in defaults or defaults[k] != v}


def table1() -> list[Run]:
    """Table 1: the rot-MNIST models, labelled as the paper prints them (with the reference of a baseline)."""
    return [Run(f"{r.label} {r.ref}".strip(), r.model, "mnist-rot", paper=PaperValue.of(r)) for r in rows("table1")]


def ablation_table(table: str) -> list[Run]:
    """Table 2 or 3: the ablations of ``e4net`` (overrides equal to its defaults dropped, so equal runs are shared)."""
    return [
        Run(a.label, a.model, "mnist-rot", _canonical_args(a.model, a.overrides), paper=PaperValue.of(a))
        for a in ablations(table)
    ]


def table4() -> list[Run]:
    """Table 4: the ResNet-18 family on CIFAR-10, then on CIFAR-100."""
    return [
        Run(r.label, r.model, dataset, paper=PaperValue.of(r, dataset))
        for dataset in ("cifar10", "cifar100")
        for r in rows("table4")
    ]


def fig2() -> list[Run]:
    """Fig. 2: the Table 4 models on CIFAR-10 per training-set size (the paper's value only at the full 5k)."""
    return [
        Run(r.label, r.model, "cifar10", train_per_class=n, paper=PaperValue.of(r, "cifar10") if n == 5000 else None)
        for r in rows("table4")
        for n in FIG2_SIZES
    ]


BUILDERS = {"table1": table1, "table2": lambda: ablation_table("table2"), "table3": lambda: ablation_table("table3"),
            "table4": table4, "fig2": fig2}  # fmt: skip
#: Overrides (tests substitute tiny grids here); :func:`grid` falls back on :data:`BUILDERS`.
GRIDS: dict[str, list[Run]] = {}


def grid(target: str) -> list[Run]:
    """The runs behind ``target`` (``"table1"`` .. ``"table4"``, ``"fig2"``), in the order of the paper's rows."""
    if target in GRIDS:
        return GRIDS[target]
    return BUILDERS[target]()
