"""CPU memory helpers (``e4net._memory``): the allocator setting of e4net's commands and huge-page buffers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import e4net
from e4net import _memory
from e4net.analysis import bench
from e4net.cli.main import main

LINUX_THP = sys.platform.startswith("linux") and Path("/sys/kernel/mm/transparent_hugepage/enabled").exists()


def test_empty_gives_usable_buffers():
    big = _memory.empty((3, (9 << 20) // 12), torch.float32)
    small = _memory.empty_like(torch.ones(4, 5, dtype=torch.float64))
    assert big.shape == (3, (9 << 20) // 12) and big.dtype == torch.float32 and big.is_contiguous()
    assert small.shape == (4, 5) and small.dtype == torch.float64
    big.fill_(2.0)
    assert float(big.sum()) == 2.0 * big.numel()
    assert not _memory.advise_huge_pages(small)  # small buffers are left alone
    if LINUX_THP:
        assert _memory.advise_huge_pages(torch.empty(16 << 20, dtype=torch.uint8))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_tune_cpu_allocator_is_reported_and_undone_by_memory_measurement():
    assert e4net.tune_cpu_allocator() is True and _memory.cpu_allocator_tuned()
    assert bench.machine_info(torch.device("cpu"))["malloc"].startswith("tuned")
    bench.peak_memory_mb(lambda: torch.ones(1 << 20), torch.device("cpu"))  # switches to the 64 KiB threshold
    assert not _memory.cpu_allocator_tuned()
    assert bench.machine_info(torch.device("cpu"))["malloc"] == "default"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
@pytest.mark.parametrize("env, expected", [(None, "tuned"), ("0", "default")])
def test_bench_command_tunes_the_allocator_unless_told_not_to(tmp_path, monkeypatch, env, expected):
    cases = [bench.LayerCase("E4-Net 5px", "p4", 2, 3, 1, 1, 5)]
    monkeypatch.setitem(bench.LAYER_SETS, "e4net", lambda: cases)
    monkeypatch.setattr(_memory, "_thresholds", None)
    if env is None:
        monkeypatch.delenv("E4NET_MALLOC_TUNING", raising=False)
    else:
        monkeypatch.setenv("E4NET_MALLOC_TUNING", env)
    out = tmp_path / "b.json"
    rc = main(["bench", "--suites", "layers", "--layer-sets", "e4net", "--batch-size", "1", "--repeats", "1",
               "--no-progress", "--json", str(out)])  # fmt: skip
    assert rc == 0
    assert json.loads(out.read_text())["machine"]["malloc"].startswith(expected)
