"""Analysis tools: parameter / MAC accounting, equivariance and invariance measurements, reports of grids of runs."""

from .count import Count, count
from .equivariance import act, equivariance_error, max_equivariance_error, randomize_
from .invariance import invariance_error, max_invariance_error
from .report import SeedResults, write_report

__all__ = [
    "Count", "count", "act", "equivariance_error", "max_equivariance_error", "randomize_", "invariance_error",
    "max_invariance_error", "SeedResults", "write_report",
]  # fmt: skip
