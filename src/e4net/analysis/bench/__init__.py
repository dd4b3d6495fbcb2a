"""The benchmark harness behind ``e4net bench``: suites of wall-clock and memory measurements, each against a
baseline measured in the same run.

Suites (:mod:`.registry`; :class:`~.suite.Suite` says how to add one):

* ``layers`` (:mod:`.layers`): the E4 layers (Eq. 12) of E4-Net and the E4-ResNet-18s per aggregation backend,
  next to GroupConv (Eq. 5) k=3 and same k; and the aggregation alone against its bandwidth bound
  (:mod:`.aggregation`);
* ``train`` (:mod:`.train_step`): one SGD step of registered models per backend;
* ``instances`` (:mod:`.instances`): GroupConv, E4Conv, group self-attention and the attentive group convolution as
  instances of Eq. 9, at several neighbourhood sizes.

Shared machinery: :mod:`.timing` (warm-up, steady state, interleaved medians), :mod:`.memory` (peak and saved
memory), :mod:`.measure` (all timings before any peak-memory measurement), :mod:`.rows` (rows and ratios),
:mod:`.machine` (what it ran on), :mod:`.table` (markdown / plain tables), :mod:`.run` (the driver).
"""

from .aggregation import AggregationRow, aggregation_bytes, bench_aggregation
from .config import BenchConfig
from .instances import INSTANCE_LAYERS, InstanceRow, bench_instances
from .layer_cases import LAYER_SETS, LayerCase, e4net_layers, resnet_layers
from .layers import bench_layer
from .machine import machine_info, machine_line
from .memory import peak_memory_mb, saved_bytes
from .registry import SUITES, get_suite
from .rows import Row
from .run import render, run_benchmarks, to_markdown
from .suite import Suite
from .table import Table
from .train_step import TrainRow, bench_train_step, switch_backend

__all__ = [
    "AggregationRow",
    "BenchConfig",
    "INSTANCE_LAYERS",
    "InstanceRow",
    "LAYER_SETS",
    "LayerCase",
    "Row",
    "SUITES",
    "Suite",
    "Table",
    "TrainRow",
    "aggregation_bytes",
    "bench_aggregation",
    "bench_instances",
    "bench_layer",
    "bench_train_step",
    "e4net_layers",
    "get_suite",
    "machine_info",
    "machine_line",
    "peak_memory_mb",
    "render",
    "resnet_layers",
    "run_benchmarks",
    "saved_bytes",
    "switch_backend",
    "to_markdown",
]
