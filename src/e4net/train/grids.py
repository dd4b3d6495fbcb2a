"""The grids of runs behind the paper's tables and Fig. 2, with the paper's numbers beside each row.

Each :class:`Run` is one configuration (model, data set, model hyper-parameters, training-set size); ``e4net
reproduce`` trains it once per seed. The paper's numbers come from the model registry (each model's
:class:`~e4net.models.PaperRow`) and, for Tables 2 and 3, from :data:`e4net.models.paper.ABLATIONS` (the one
source of the ablation configurations); models not registered (yet) fall back on the values quoted below from the
paper's text. Configurations that coincide (the E4-Net baseline is a row of Tables 1, 2 and 3: ``concat=both``,
``s=2``, ``r=1``, ``k=5`` are its defaults) share their runs. Fig. 2's numbers are in an appendix that is not part
of the paper's text; only its 5k-per-class end (= Table 4, the full training set) is quoted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PaperValue:
    """The paper's reported numbers for a row (params and MACs as counts; the paper's "FLOPs" are MACs)."""

    test_error: float | None
    std: float | None
    params: float | None
    macs: float | None


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


# Quoted from the paper's text, used only for models that are not registered.
_TABLE1 = [  # label, model, error, std, params, FLOPs
    ("p4-SA [24]", "p4-sa", 2.54, 0.052, 44.67e3, 400e6),
    ("p4-CNN [5]", "p4cnn", 1.79, 0.043, 77.54e3, 46.2e6),
    ("α-p4-CNN [23]", "alpha-p4cnn", 1.69, 0.021, 73.13e3, 27.0e6),
    ("E4-Net", "e4net", 1.29, 0.023, 18.8e3, 17e6),
    ("E4-Net (Large)", "e4net-large", 1.17, 0.019, 41.1e3, 36.9e6),
]
_TABLE4 = [  # label, model, CIFAR-10 (error, std), CIFAR-100 (error, std), params, FLOPs
    ("R18", "r18", (9.7, 0.43), (34.0, 0.76), 11e6, 0.56e9),
    ("p4-R18", "p4-r18", (7.53, 0.21), (27.96, 0.56), 11e6, 2.99e9),
    ("p4-E4R18", "p4-e4r18", (6.42, 0.14), (26.59, 0.36), 5.8e6, 1.85e9),
    ("p4m-R18", "p4m-r18", (5.83, 0.17), (24.95, 0.42), 10.8e6, 5.63e9),
    ("p4m-E4R18", "p4m-e4r18", (4.96, 0.16), (22.18, 0.46), 6.0e6, 3.87e9),
]
FIG2_SIZES = (1000, 2000, 3000, 4000, 5000)


def _registered_row(model: str):
    from ..models import list_models, model_spec

    return model_spec(model).paper if model in list_models() else None


def _canonical_args(model: str, args: dict[str, Any]) -> dict[str, Any]:
    """Drop overrides equal to the model's defaults, so that equal configurations share their runs."""
    if not args:
        return {}
    from ..models import create_model, list_models, model_spec

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
    runs = []
    for label, model, err, std, params, macs in _TABLE1:
        row = _registered_row(model)
        paper = (
            PaperValue(row.test_error, row.test_error_std, row.params, row.macs)
            if row is not None
            else PaperValue(err, std, params, macs)
        )
        runs.append(Run(label, model, "mnist-rot", paper=paper))
    return runs


def ablation_table(table: str) -> list[Run]:
    from ..models.paper import ablations

    return [
        Run(
            a.label,
            a.model,
            "mnist-rot",
            _canonical_args(a.model, a.overrides),
            paper=None
            if a.paper is None
            else PaperValue(a.paper.test_error, a.paper.test_error_std, a.paper.params, a.paper.macs),
        )
        for a in ablations(table)
    ]


def _table4_paper(label, model, c10, c100, params, macs) -> tuple[PaperValue, PaperValue]:
    row = _registered_row(model)
    if row is not None:
        return (
            PaperValue(row.test_error, row.test_error_std, row.params, row.macs),
            PaperValue(row.test_error_cifar100, row.test_error_cifar100_std, row.params, row.macs),
        )
    return PaperValue(*c10, params, macs), PaperValue(*c100, params, macs)


def table4() -> list[Run]:
    rows = [(r[0], r[1], *_table4_paper(*r)) for r in _TABLE4]
    return [Run(label, model, "cifar10", paper=p10) for label, model, p10, _ in rows] + [
        Run(label, model, "cifar100", paper=p100) for label, model, _, p100 in rows
    ]


def fig2() -> list[Run]:
    rows = [(r[0], r[1], _table4_paper(*r)[0]) for r in _TABLE4]
    return [
        Run(label, model, "cifar10", train_per_class=n, paper=p10 if n == 5000 else None)
        for label, model, p10 in rows
        for n in FIG2_SIZES
    ]


BUILDERS = {"table1": table1, "table2": lambda: ablation_table("table2"), "table3": lambda: ablation_table("table3"),
            "table4": table4, "fig2": fig2}  # fmt: skip
#: Overrides (tests substitute tiny grids here); :func:`grid` falls back on :data:`BUILDERS`.
GRIDS: dict[str, list[Run]] = {}


def grid(target: str) -> list[Run]:
    if target in GRIDS:
        return GRIDS[target]
    return BUILDERS[target]()
