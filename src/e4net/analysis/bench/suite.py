"""What a benchmark suite is (:class:`Suite`): its cases, how to measure one, how to show its rows.

Adding a suite: a module that builds one :class:`Suite` (see :mod:`.layers`, :mod:`.train_step`, :mod:`.instances`),
its options as fields of :class:`~e4net.analysis.bench.config.BenchConfig`, and one entry in :mod:`.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import BenchConfig
from .measure import MemoryJob
from .rows import Row
from .table import Table


def _no_options(config: BenchConfig) -> None:
    return None


@dataclass(frozen=True)
class Suite:
    """One suite of ``e4net bench``.

    * ``cases(config)``: the cases to measure (one progress step each);
    * ``measure(case, config, device, memory_jobs)``: the rows of one case, timed now, their peak memory appended
      to ``memory_jobs`` (:func:`~e4net.analysis.bench.measure.measure` does both);
    * ``tables(result)``: its tables, from the JSON-able result of the run (rows as dicts);
    * ``baselines``: for each row kind it fills (``Row.suite``), the ratio every row gets and the ``impl`` of the
      baseline row it is taken against (measured in the same run, within the same case);
    * ``check(config)``: refuse bad values of the suite's own options (ValueError), before anything runs.
    """

    name: str
    summary: str
    cases: Callable[[BenchConfig], Sequence[Any]]
    measure: Callable[[Any, BenchConfig, torch.device, list[MemoryJob]], list[Row]]
    tables: Callable[[dict[str, Any]], list[Table]]
    baselines: Mapping[str, tuple[str, str]]
    check: Callable[[BenchConfig], None] = _no_options
