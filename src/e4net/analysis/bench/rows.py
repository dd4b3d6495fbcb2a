"""What a suite measures: one :class:`Row` per implementation of a case, and its ratios against a baseline row of the
same case measured in the same run (:func:`add_ratio`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Row:
    """One measured implementation (``impl``) of one case of a suite; times are medians (ms), memory in MiB.

    ``suite`` names the table the row belongs to (a suite may fill several, e.g. ``layers`` and ``aggregation``);
    ``ratios`` holds the comparisons with the case's baseline; ``note`` says why a measurement is missing.
    """

    suite: str
    case: str
    impl: str
    fwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    peak_mb: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    note: str = ""


def add_ratio(rows: Sequence[Row], baseline: str, metric: str, key: str, *, inverse: bool = False) -> None:
    """``row.ratios[key] = row.metric / base.metric`` for every row of one case (``inverse``: ``base / row``, e.g. a
    speedup from times), where ``base`` is the row whose ``impl`` is ``baseline``; nothing when that row or its
    value is missing."""
    base = next((r for r in rows if r.impl == baseline), None)
    b = getattr(base, metric) if base is not None else None
    if not b:
        return
    for r in rows:
        v = getattr(r, metric)
        if v is None or (inverse and not v):
            continue
        r.ratios[key] = b / v if inverse else v / b


def add_speedups(rows: Sequence[Row], baseline: str) -> None:
    """The ratios of an implementation against the baseline ``impl``: ``speedup_vs_ref`` = baseline fwd+bwd time /
    time (> 1: faster), ``fwd_speedup_vs_ref`` the same for the forward, ``mem_vs_ref`` = peak / baseline peak."""
    add_ratio(rows, baseline, "fwdbwd_ms", "speedup_vs_ref", inverse=True)
    add_ratio(rows, baseline, "fwd_ms", "fwd_speedup_vs_ref", inverse=True)
    add_ratio(rows, baseline, "peak_mb", "mem_vs_ref")
