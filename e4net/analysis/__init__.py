"""Analysis tools: parameter / MAC accounting and equivariance measurements."""

from .count import Count, count

__all__ = ["Count", "count"]
