"""Analysis tools: parameter / MAC accounting, equivariance measurements and the benchmark harness (``e4net bench``)."""

from .count import Count, count
from .equivariance import act, equivariance_error, max_equivariance_error, randomize_

# isort: split
# After .count: the bench imports e4net.models, whose table module imports `count` from this package.
from .bench import BenchConfig, run_benchmarks

__all__ = [
    "BenchConfig",
    "Count",
    "count",
    "act",
    "equivariance_error",
    "max_equivariance_error",
    "randomize_",
    "run_benchmarks",
]
