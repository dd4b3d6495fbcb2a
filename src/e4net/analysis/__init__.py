"""Analysis tools: parameter / MAC accounting and equivariance measurements."""

from .count import Count, count
from .equivariance import act, equivariance_error, max_equivariance_error, randomize_

__all__ = ["Count", "count", "act", "equivariance_error", "max_equivariance_error", "randomize_"]
