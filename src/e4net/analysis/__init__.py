"""Analysis tools: parameter / MAC accounting, equivariance and invariance measurements, the comparison of the
models' live counts with the paper's Tables 1-4 (:mod:`.paper_table`, ``e4net models``), reports of grids of runs
(:mod:`.report`, ``e4net reproduce``) and the benchmark harness (:mod:`.bench`, ``e4net bench``)."""

from .bench import BenchConfig, run_benchmarks
from .count import Count, count
from .equivariance import act, equivariance_error, max_equivariance_error, randomize_
from .invariance import invariance_error, max_invariance_error
from .paper_table import TableRow, format_markdown, format_table, model_table
from .report import SeedResults, write_report

__all__ = [
    "BenchConfig",
    "Count",
    "count",
    "act",
    "equivariance_error",
    "max_equivariance_error",
    "randomize_",
    "invariance_error",
    "max_invariance_error",
    "TableRow",
    "model_table",
    "format_table",
    "format_markdown",
    "SeedResults",
    "write_report",
    "run_benchmarks",
]
