"""DistributedDataParallel: two CPU processes on the gloo backend (as torchrun would start them) train to the same
weights as one process with the same global batch, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from e4net.train import TrainConfig, train
from e4net.train.checkpoint import load_checkpoint

CFG = dict(model="tiny-plain", dataset="digits", epochs=2, batch_size=20, train_per_class=4, limit_test_batches=1,
           progress=False, device="cpu", lr=0.01)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, cache: str, no_sync: bool = False) -> None:
    if no_sync:  # the planted bug: each rank trains on its half of the batch, gradients never averaged
        torch.nn.parallel.DistributedDataParallel = lambda module, **kw: module
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), E4NET_CACHE=cache)  # fmt: skip
    torch.set_num_threads(1)
    import _tiny_models  # noqa: F401 - registers the tiny test models

    train(TrainConfig(out=out if rank == 0 else out + f"-rank{rank}", **CFG))


def test_two_process_gloo_matches_one_process(tmp_path, monkeypatch):
    import _tiny_models  # noqa: F401

    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))
    single = tmp_path / "single"
    s1 = train(TrainConfig(out=str(single), **CFG))
    ddp = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(ddp), str(tmp_path / "cache")), nprocs=2, join=True)
    s2 = json.loads((ddp / "summary.json").read_text())
    assert s2["world_size"] == 2 and s2["steps"] == s1["steps"] == 4
    a, b = (
        load_checkpoint(single / "checkpoint.pt")["model_state"],
        load_checkpoint(ddp / "checkpoint.pt")["model_state"],
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a)
    m1 = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(m1, m2):  # losses / errors all-reduced over both ranks equal the single process's
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)
        assert x["test_error"] == pytest.approx(y["test_error"])
    assert not (tmp_path / "ddp-rank1").exists()  # only rank 0 writes


@pytest.mark.slow
def test_comparison_detects_missing_gradient_averaging(tmp_path, monkeypatch):
    import _tiny_models  # noqa: F401

    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))
    train(TrainConfig(out=str(tmp_path / "single"), **CFG))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), str(tmp_path / "cache"), True), nprocs=2)
    a = load_checkpoint(tmp_path / "single" / "checkpoint.pt")["model_state"]
    b = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model_state"]
    assert any(not torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-5) for k in a)
