"""The paper's reported numbers, Tables 1-4, as data: the one place where they are written.

He, Chen, Chen, Lin, "Efficient Equivariant Network", NeurIPS 2021 (full text in ``shared/paper/``).

Every row is keyed by its table and its label as printed, and joined *by name* to a registered model
(:func:`e4net.create_model`) and the overrides that make it (``model``, ``overrides``). The model registry keeps
the builders and input specifications; the models table (``e4net models``), ``e4net reproduce``, the docs and the
benchmark scripts read the paper's numbers from here. A row that the paper prints in several tables (E4-Net is
Table 1's "E4-Net", Table 2's "K&V" and Table 3's "s=2", "r=1" and "k=5") is written once and repeated with
:func:`dataclasses.replace`, so each number of the paper appears once in the code.

Conventions: ``params`` and ``macs`` are the paper's "Params" and "FLOPs" columns as numbers (the paper's FLOPs
are multiply-accumulates, Sec. 4.2); test errors are in percent with their ``±`` (standard deviation over 5 seeds)
where the paper gives one. Table 4 has two error columns, CIFAR-10 and CIFAR-100.

This module imports nothing from e4net: it sits at the bottom of the layering (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

__all__ = ["PaperRow", "TABLES", "ROWS", "rows", "row", "rows_for_model", "ablations"]


@dataclass(frozen=True)
class PaperRow:
    """One row of one of the paper's tables.

    ``dataset`` is the data set of the first error column (``"mnist-rot"`` or ``"cifar10"``); Table 4's second
    column (CIFAR-100) is ``test_error_cifar100``. ``model`` and ``overrides`` name the registered model that the
    row describes: ``e4net.create_model(row.model, **row.overrides)``. ``ref`` is the reference the paper prints
    beside a baseline's label (Table 1: ``"[24]"`` for p4-SA).
    """

    table: str
    label: str
    model: str
    params: float
    macs: float
    test_error: float | None = None
    test_error_std: float | None = None
    test_error_cifar100: float | None = None
    test_error_cifar100_std: float | None = None
    dataset: str = "mnist-rot"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    ref: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @property
    def name(self) -> str:
        """The configuration as a display name: the model and its overrides, e.g. ``e4net concat=none``."""
        args = " ".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"{self.model} {args}".strip()

    def error(self, dataset: str | None = None) -> tuple[float | None, float | None]:
        """``(test error %, ±)`` on ``dataset`` (the row's own data set by default; ``"cifar100"`` for Table 4)."""
        if dataset in (None, self.dataset):
            return self.test_error, self.test_error_std
        if dataset == "cifar100" and self.table == "table4":
            return self.test_error_cifar100, self.test_error_cifar100_std
        raise ValueError(f"the paper reports no {dataset} error for {self.table} {self.label!r}")


#: Table captions, as printed.
TABLES: Mapping[str, str] = MappingProxyType(
    {
        "table1": "Test error on rot-MNIST (standard deviation over 5 random seeds)",
        "table2": "The effect of concatenation (rot-MNIST)",
        "table3": "Hyperparameters analysis (rot-MNIST)",
        "table4": "Test error on CIFAR10 and CIFAR100 (standard deviation over 5 random seeds)",
    }
)

# ---- Table 1: rotated MNIST (Sec. 5.1) ----------------------------------------------------------------------------
_E4NET = PaperRow("table1", "E4-Net", "e4net", 18.8e3, 17e6, 1.29, 0.023)
_TABLE1 = (
    PaperRow("table1", "p4-SA", "p4-sa", 44.67e3, 400e6, 2.54, 0.052, ref="[24]"),
    PaperRow("table1", "p4-CNN", "p4cnn", 77.54e3, 46.2e6, 1.79, 0.043, ref="[5]"),
    PaperRow("table1", "α-p4-CNN", "alpha-p4cnn", 73.13e3, 27.0e6, 1.69, 0.021, ref="[23]"),
    _E4NET,
    PaperRow("table1", "E4-Net (large)", "e4net-large", 41.1e3, 36.9e6, 1.17, 0.019),
)


def _e4net_as(table: str, label: str, **overrides: Any) -> PaperRow:
    """Table 1's E4-Net row printed again in an ablation table (the same experiment)."""
    return replace(_E4NET, table=table, label=label, overrides=overrides)


# ---- Table 2: where the concatenation along A is used (N2 in Eq. 12) -----------------------------------------------
_TABLE2 = (
    PaperRow("table2", "None", "e4net", 9.9e3, 8.9e6, 4.10, 0.085, overrides={"concat": "none"}),
    PaperRow("table2", "only K", "e4net", 14.4e3, 13e6, 1.96, 0.045, overrides={"concat": "kernel"}),
    PaperRow("table2", "only V", "e4net", 14.4e3, 13e6, 1.52, 0.036, overrides={"concat": "value"}),
    _e4net_as("table2", "K&V", concat="both"),
)

# ---- Table 3: slices s, reduction ratio r, kernel size k of every E4 layer (the others at 2, 1, 5) ----------------
_TABLE3 = (
    PaperRow("table3", "s=1", "e4net", 16.3e3, 14.9e6, 1.45, 0.022, overrides={"slices": 1}),
    _e4net_as("table3", "s=2", slices=2),
    PaperRow("table3", "s=4", "e4net", 23.9e3, 21.2e6, 1.24, 0.026, overrides={"slices": 4}),
    _e4net_as("table3", "r=1", reduction=1),
    PaperRow("table3", "r=2", "e4net", 13.0e3, 12e6, 1.33, 0.026, overrides={"reduction": 2}),
    PaperRow("table3", "r=4", "e4net", 10.1e3, 9.5e6, 1.37, 0.025, overrides={"reduction": 4}),
    PaperRow("table3", "k=3", "e4net", 15.6e3, 14.3e6, 1.46, 0.031, overrides={"kernel_size": 3}),
    _e4net_as("table3", "k=5", kernel_size=5),
    PaperRow("table3", "k=7", "e4net", 23.8e3, 21.1e6, 1.27, 0.021, overrides={"kernel_size": 7}),
)


# ---- Table 4: CIFAR-10 and CIFAR-100 (Sec. 5.2) --------------------------------------------------------------------
def _t4(
    label: str, model: str, params: float, macs: float, c10: tuple[float, float], c100: tuple[float, float]
) -> PaperRow:
    return PaperRow("table4", label, model, params, macs, *c10, *c100, dataset="cifar10")


_TABLE4 = (
    _t4("R18", "r18", 11e6, 0.56e9, (9.7, 0.43), (34.0, 0.76)),
    _t4("p4-R18", "p4-r18", 11e6, 2.99e9, (7.53, 0.21), (27.96, 0.56)),
    _t4("p4-E4R18", "p4-e4r18", 5.8e6, 1.85e9, (6.42, 0.14), (26.59, 0.36)),
    _t4("p4m-R18", "p4m-r18", 10.8e6, 5.63e9, (5.83, 0.17), (24.95, 0.42)),
    _t4("p4m-E4R18", "p4m-e4r18", 6.0e6, 3.87e9, (4.96, 0.16), (22.18, 0.46)),
)

#: Every row of Tables 1-4, in the paper's order.
ROWS: tuple[PaperRow, ...] = _TABLE1 + _TABLE2 + _TABLE3 + _TABLE4


def rows(table: str | None = None) -> list[PaperRow]:
    """The rows of ``table`` (``"table1"`` .. ``"table4"``) in the paper's order, or all rows."""
    if table is not None and table not in TABLES:
        raise ValueError(f"unknown table {table!r}; the paper's tables: {', '.join(TABLES)}")
    return [r for r in ROWS if table is None or r.table == table]


def row(table: str, label: str) -> PaperRow:
    """The row printed as ``label`` in ``table``."""
    for r in rows(table):
        if r.label == label:
            return r
    known = ", ".join(repr(r.label) for r in rows(table))
    raise ValueError(f"{table} has no row {label!r}; its rows: {known}")


def rows_for_model(model: str, overrides: Mapping[str, Any] | None = None) -> list[PaperRow]:
    """The rows that describe ``create_model(model, **overrides)`` (``overrides`` None: any overrides)."""
    return [r for r in ROWS if r.model == model and (overrides is None or dict(r.overrides) == dict(overrides))]


def ablations(table: str | None = None) -> list[PaperRow]:
    """The ablation rows of Tables 2 and 3 (``table`` ``"table2"`` / ``"table3"``), or both."""
    if table is not None and table not in ("table2", "table3"):
        raise ValueError(f"no ablations for {table!r}; known: table2, table3")
    return [r for r in ROWS if r.table in ("table2", "table3") and (table is None or r.table == table)]
