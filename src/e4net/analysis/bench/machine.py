"""What a benchmark ran on: :func:`machine_info` (recorded in the results), its one-line description
(:func:`machine_line`), the memory bandwidth of known GPUs, and the label of a backend on this device."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from ..._memory import cpu_allocator_tuned
from ...backends import available_backends, check_backend, resolve_backend

# Peak DRAM bandwidth (GB/s) of common GPUs, for the aggregation's bandwidth bound; others need --bandwidth.
GPU_BANDWIDTH_GBS = {"H200": 4800.0, "H100 SXM": 3350.0, "H100 PCIe": 2000.0, "A100-SXM4-80GB": 2039.0, "A100": 1555.0}


def machine_info(device: torch.device) -> dict[str, Any]:
    """Device, CPU / GPU name, thread count, library versions, backends and the malloc setting (taken before any
    peak-memory measurement changes it)."""
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "backends": available_backends(),
        "malloc": "tuned (e4net.tune_cpu_allocator)" if cpu_allocator_tuned() else "default",
    }
    for mod in ("numba", "triton"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(machine: dict[str, Any], repeats: int) -> str:
    """The line on top of every report: where it ran, with which libraries and allocator, how many repeats."""
    m = machine
    where = m.get("gpu") or f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads"
    return (
        f"Device: {m['device']} ({where}); torch {m['torch']}, numba {m.get('numba')}, triton {m.get('triton')}; "
        f"malloc {m.get('malloc', 'default')}; median of {repeats} repeats."
    )


def default_bandwidth(device: torch.device) -> float | None:
    """The memory bandwidth used for the bound: looked up by GPU name (``GPU_BANDWIDTH_GBS``), ``None`` on CPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, bw in GPU_BANDWIDTH_GBS.items():
        if key in name:
            return bw
    return None


def backend_label(prefix: str, backend: str, device: torch.device) -> str:
    """``"<prefix> <backend>"``, with what ``auto`` picks on ``device`` spelled out (``"E4 auto=numba"``);
    an unknown backend is refused by :func:`e4net.backends.check_backend`."""
    check_backend(backend)
    if backend != "auto":
        return f"{prefix} {backend}"
    return f"{prefix} auto={resolve_backend('auto', device)}"
