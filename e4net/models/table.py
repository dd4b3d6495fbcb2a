"""Parameters and MACs of every registered model (and the Table 2 / 3 ablations) against the paper's tables.

Everything is computed live with :func:`e4net.count` on a model built by :func:`e4net.create_model`, at the input
size of the model's data set. ``macs`` counts all convolution / linear work *including* the E4 aggregation;
``macs_no_agg`` leaves the aggregation out, which is how the paper's own MAC counts behave (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..analysis import count
from .paper import TOLERANCE, ablations, deviation
from .registry import INPUT_SHAPES, PaperRow, create_model, list_models, model_spec

__all__ = ["TableRow", "model_table", "format_table", "count_model"]


@dataclass
class TableRow:
    """One model configuration: our counts, the paper's row and the relative differences."""

    name: str
    model: str
    group: str | None
    dataset: str
    params: int
    macs: int
    macs_no_agg: int
    paper: PaperRow | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def _rel(ours: float, theirs: float | None) -> float | None:
        return None if not theirs else (ours - theirs) / theirs

    @property
    def params_diff(self) -> float | None:
        """``(ours - paper) / paper`` for the parameters, None without a paper row."""
        return self._rel(self.params, self.paper.params if self.paper else None)

    @property
    def macs_diff(self) -> float | None:
        return self._rel(self.macs, self.paper.macs if self.paper else None)

    @property
    def macs_no_agg_diff(self) -> float | None:
        return self._rel(self.macs_no_agg, self.paper.macs if self.paper else None)

    @property
    def off(self) -> bool:
        """True when params or MACs differ from the paper by more than :data:`~e4net.models.paper.TOLERANCE`."""
        return any(d is not None and abs(d) > TOLERANCE for d in (self.params_diff, self.macs_diff))

    @property
    def note(self) -> str:
        """Empty when within tolerance, else the recorded explanation (or a plain statement that there is none)."""
        if not self.off or self.paper is None:
            return ""
        return deviation(self.paper.table, self.paper.label) or "unexplained deviation"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "overrides": self.overrides,
            "group": self.group,
            "dataset": self.dataset,
            "params": self.params,
            "macs": self.macs,
            "macs_no_agg": self.macs_no_agg,
            "paper": None if self.paper is None else self.paper.__dict__,
            "params_diff": self.params_diff,
            "macs_diff": self.macs_diff,
            "macs_no_agg_diff": self.macs_no_agg_diff,
            "off": self.off,
            "note": self.note,
        }


def count_model(name: str, **overrides: Any) -> tuple[int, int, int]:
    """``(params, macs, macs without the E4 aggregation)`` of ``create_model(name, **overrides)``."""
    from ..nn import E4Conv

    spec = model_spec(name)
    model = create_model(name, **overrides)
    c = count(model, spec.input_shape)
    agg = sum(v for k, v in c.by_module.items() if k and isinstance(model.get_submodule(k), E4Conv))
    return c.params, c.macs, c.macs - agg


def model_table(dataset: str | None = None, name: str | None = None, include_ablations: bool = True) -> list[TableRow]:
    """Rows for every registered model (then the Table 2 / 3 ablations of ``e4net``), optionally filtered.

    ``dataset`` keeps the models of that data set; ``name`` keeps one registered model (and, for ``e4net``, its
    ablations). Unknown names / data sets raise ValueError.
    """
    if dataset is not None and dataset not in INPUT_SHAPES:
        raise ValueError(f"unknown data set {dataset!r}; known: {', '.join(INPUT_SHAPES)}")
    names = list_models()
    if name is not None:
        model_spec(name)  # raises with the list of names
        names = [name]
    names = [n for n in names if dataset is None or model_spec(n).dataset == dataset]
    configs: list[tuple[str, str, dict[str, Any], PaperRow | None]] = [(n, n, {}, model_spec(n).paper) for n in names]
    if include_ablations:
        configs += [(a.name, a.model, dict(a.overrides), a.paper) for a in ablations() if a.model in names]
    memo: dict[tuple[str, tuple], tuple[int, int, int]] = {}
    rows = []
    for display, model, overrides, paper in configs:
        spec = model_spec(model)
        full = {**spec.defaults, **overrides}
        key = (model, tuple(sorted((k, repr(v)) for k, v in full.items())))
        if key not in memo:
            memo[key] = count_model(model, **overrides)
        params, macs, macs_no_agg = memo[key]
        rows.append(TableRow(display, model, spec.group, spec.dataset, params, macs, macs_no_agg, paper, overrides))
    return rows


def _human(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}" if x / div < 100 else f"{x / div:.1f}{suffix}"
    return f"{x:g}"


def _pct(d: float | None) -> str:
    return "" if d is None else f"{100 * d:+.1f}%"


def format_table(rows: Iterable[TableRow], notes: bool = True) -> str:
    """A plain-text table; rows off by more than 5% get ``!`` and, with ``notes``, a numbered explanation below."""
    header = [
        "model",
        "table",
        "group",
        "params",
        "MACs",
        "MACs-agg",
        "paper params",
        "paper MACs",
        "d params",
        "d MACs",
        "d MACs-agg",
        "",
    ]
    lines, expl = [], []
    for r in rows:
        p = r.paper
        flag = ""
        if r.off:
            note = r.note
            if note not in expl:
                expl.append(note)
            flag = f"! [{expl.index(note) + 1}]"
        lines.append(
            [
                r.name,
                f"{p.table} {p.label}" if p else "-",
                r.group or "-",
                f"{r.params:,}",
                _human(r.macs),
                _human(r.macs_no_agg),
                _human(p.params) if p else "-",
                _human(p.macs) if p else "-",
                _pct(r.params_diff),
                _pct(r.macs_diff),
                _pct(r.macs_no_agg_diff),
                flag,
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    right = {3, 4, 5, 6, 7, 8, 9, 10}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines]
    if notes and expl:
        out.append("")
        out.append("! = params or MACs more than 5% from the paper. MACs-agg: MACs without the E4 aggregation.")
        out += [f"[{i + 1}] {e}" for i, e in enumerate(expl)]
    return "\n".join(out)
