"""Shared test fixtures: deterministic seeds, hypothesis profiles, data / GPU markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "default", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Mutation testing (docs/testing.md): the default examples, but stop at the first failing one (a mutant is killed by
# any failure; shrinking it to a minimal example would only spend the time limit).
settings.register_profile(
    "mutation",
    parent=settings.get_profile("default"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    report_multiple_bugs=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The data replicas in ../shared/data; skips the test with the reason when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"data replicas not found at {SHARED_DATA} (only present on the project's machines)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _fresh_group_tables() -> None:
    """Each test computes the groups' cached composition and relative-position tables itself.

    Without this, the first test to touch a group fills the caches of the module-level P4 / P4M for all later
    tests, and mutation testing (docs/testing.md) would credit a mutated group law to that one test only.
    """
    from e4net.groups import GROUPS

    for group in GROUPS.values():
        for cached in ("composition_table", "_relative_position_tables"):
            group.__dict__.pop(cached, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is available")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
