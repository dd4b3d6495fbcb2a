"""The suites ``e4net bench`` knows, by name, in the order they run and are reported."""

from __future__ import annotations

from . import inference, instances, layers, model_pairs, train_step, volumetric
from .suite import Suite

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (layers.SUITE, train_step.SUITE, instances.SUITE, model_pairs.SUITE, inference.SUITE, volumetric.SUITE)
}


def get_suite(name: str) -> Suite:
    """The registered suite ``name``; a ValueError naming the known suites otherwise."""
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}") from None
