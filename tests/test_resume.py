"""``--resume`` restores the RNG states: a run with dropout, interrupted by ``--max-steps`` and resumed, is
bit-identical (weights and metrics) to an uninterrupted one.

The resume tests of ``test_train.py`` use models that never draw a random number while training, so a resume that
forgot the RNG state would pass them. ``tiny-dropout`` draws a dropout mask from torch's global generator at every
step.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import _tiny_models  # noqa: F401 - registers the tiny test models (tiny-dropout)
import numpy as np
import pytest
import torch

from e4net.train import TrainConfig, train
from e4net.train import trainer as trainer_module
from e4net.train.checkpoint import load_checkpoint, rng_state, seed_everything, set_rng_state

TINY = dict(model="tiny-dropout", dataset="digits", epochs=2, batch_size=32, train_per_class=20, limit_train_batches=4,
            limit_test_batches=1, progress=False)  # fmt: skip
TIMING = ("seconds", "per_s", "wait")  # keys of metrics.jsonl that measure time, the only ones allowed to differ


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))


def _cfg(out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(out), **kw})


def _metrics(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not any(t in k for t in TIMING)} for line in lines]


def _differences(ref: Path, cut: Path) -> list[str]:
    """What differs between the final checkpoints and metrics of two runs (empty: bit-identical)."""
    a, b = load_checkpoint(ref / "checkpoint.pt"), load_checkpoint(cut / "checkpoint.pt")
    diffs = [f"weight {k}" for k in a["model_state"] if not torch.equal(a["model_state"][k], b["model_state"][k])]
    if _metrics(ref) != _metrics(cut):
        diffs.append(f"metrics {_metrics(ref)} != {_metrics(cut)}")
    return diffs


def _interrupted_and_resumed(cut: Path, pause_at: int) -> dict:
    paused = train(_cfg(cut, max_steps=pause_at))
    assert paused["status"] == "paused" and load_checkpoint(cut / "checkpoint.pt")["step"] == pause_at
    return train(TrainConfig(out=str(cut), resume=True, progress=False))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run of tiny-dropout (2 epochs x 4 steps), shared by the tests of this module."""
    out = tmp_path_factory.mktemp("dropout") / "ref"
    mp = pytest.MonkeyPatch()
    mp.setenv("E4NET_CACHE", str(out.parent / "cache"))
    try:
        train(_cfg(out))
    finally:
        mp.undo()
    return out


@pytest.mark.parametrize("pause_at", [3, 4], ids=["mid-epoch", "epoch-boundary"])
def test_resume_with_dropout_is_bit_identical(reference, tmp_path, pause_at):
    summary = _interrupted_and_resumed(tmp_path / "cut", pause_at)
    diffs = _differences(reference, tmp_path / "cut")
    assert not diffs, f"the resumed run differs from the uninterrupted one: {'; '.join(diffs)}"
    assert summary["steps"] == 8 and summary["test_error"] == json.loads((reference / "summary.json").read_text())[
        "test_error"]  # fmt: skip


def test_dropout_draws_from_the_global_rng(reference, tmp_path):
    """The premise: the same run with another torch RNG state after the model's initialisation ends elsewhere."""
    real_count = trainer_module.count

    def count_then_draw(*args, **kw):  # called by Trainer.setup right after the model is built
        result = real_count(*args, **kw)
        torch.rand(1)
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(trainer_module, "count", count_then_draw)
    try:
        train(_cfg(tmp_path / "shifted"))
    finally:
        mp.undo()
    diffs = _differences(reference, tmp_path / "shifted")
    assert any(d.startswith("weight") for d in diffs) and any(d.startswith("metrics") for d in diffs)


def test_resume_test_detects_a_lost_rng_state(reference, tmp_path, monkeypatch):
    """The planted bug: a resume that does not restore the RNG states. The bit-identity check must catch it."""
    monkeypatch.setattr(trainer_module, "set_rng_state", lambda state: None)
    _interrupted_and_resumed(tmp_path / "cut", 3)
    diffs = _differences(reference, tmp_path / "cut")
    assert any(d.startswith("weight") for d in diffs) and any(d.startswith("metrics") for d in diffs)


def test_rng_state_round_trip():
    """``rng_state`` / ``set_rng_state`` cover torch, numpy and Python's ``random``; ``seed_everything`` seeds all
    three."""

    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    seed_everything(5)
    first = draws()
    seed_everything(5)
    assert draws() == first
    saved = rng_state()
    after = draws()
    assert after != first
    draws()  # move every generator on
    set_rng_state(saved)
    assert draws() == after
    seed_everything(6)
    other = draws()
    assert all(o != f for o, f in zip(other, first))  # each generator is seeded by the seed
    seed_everything(2**32 + 5)  # numpy takes the seed modulo 2**32
    assert np.random.rand(3).tolist() == first[1]


def test_cuda_rng_states_are_restored_only_where_they_fit(monkeypatch):
    """The CUDA generators' states are set when the checkpoint has them for as many devices as there are now (faked
    here: this test needs no GPU), and skipped otherwise."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(states))
    base = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    set_rng_state(base)  # saved without CUDA: nothing to restore there
    set_rng_state({**base, "cuda": ["s0"]})  # saved with one GPU, two now: does not fit, skipped
    assert calls == []
    set_rng_state({**base, "cuda": ["s0", "s1"]})
    assert calls == [["s0", "s1"]]


def test_truncate_metrics_keeps_the_completed_epochs(tmp_path):
    from e4net.train.outputs import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    lines = ['{"epoch": 1, "a": 1}', '{"note": "no epoch"}', "not json", '{"epoch": 3}', '{"epoch": 2}']
    path.write_text("\n".join(lines) + "\n")
    truncate_metrics(path, 2)
    assert path.read_text() == '{"epoch": 1, "a": 1}\n{"note": "no epoch"}\n{"epoch": 2}\n'
    truncate_metrics(path, 0)  # a line without an epoch counts as epoch 0
    assert path.read_text() == '{"note": "no epoch"}\n'
    truncate_metrics(tmp_path / "absent.jsonl", 1)  # nothing to truncate
    assert not (tmp_path / "absent.jsonl").exists()


def test_load_model_state_names_the_mismatch():
    from e4net.train.checkpoint import CheckpointError, load_model_state

    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    state = model.state_dict()
    load_model_state(model, state, "ck.pt", "m")  # fits
    with pytest.raises(CheckpointError, match=r"^ck\.pt does not fit model 'm': missing 1 tensors \(e\.g\. 0\.bias\)$"):
        load_model_state(model, {"0.weight": state["0.weight"]}, "ck.pt", "m")
    extra = {**state, "x": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"^ck\.pt does not fit model 'm': 1 unexpected tensors \(e\.g\. x\)$"):
        load_model_state(model, extra, "ck.pt", "m")
    both = {"0.weight": state["0.weight"], "x": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"missing 1 tensors \(e\.g\. 0\.bias\); 1 unexpected tensors"):
        load_model_state(model, both, "ck.pt", "m")
    wrong = {**state, "0.weight": torch.zeros(4, 2)}
    with pytest.raises(CheckpointError, match=r"^ck\.pt does not fit model 'm': size mismatch for 0\.weight: .*$"):
        load_model_state(model, wrong, "ck.pt", "m")


def test_summary_of_a_run(reference):
    summary = json.loads((reference / "summary.json").read_text())
    last = json.loads((reference / "metrics.jsonl").read_text().splitlines()[-1])
    expected = {
        "status": "completed", "model": "tiny-dropout", "model_args": {}, "dataset": "digits", "seed": 0,
        "test_error": last["test_error"], "test_loss": last["test_loss"], "val_error": None, "eval_epoch": 2,
        "epochs": 2, "steps": 8, "train_size": 200, "test_size": 1000, "test_images_evaluated": 256,
        "world_size": 1, "device": "cpu", "amp": False, "torch": torch.__version__,
    }  # fmt: skip
    assert {k: summary[k] for k in expected} == expected
    assert set(summary) == set(expected) | {"params", "macs", "seconds", "config"}
    assert summary["config"]["model"] == "tiny-dropout" and summary["config"]["limit_test_batches"] == 1


def test_summary_counts_every_test_image_without_a_limit():
    from types import SimpleNamespace

    from e4net.analysis import Count
    from e4net.train.outputs import run_summary

    data = SimpleNamespace(train=[0] * 5, test=[0] * 7)
    cfg = TrainConfig(limit_test_batches=None)
    s = run_summary(
        cfg, data, Count(1, 2), {}, steps=0, seconds=0.0, world_size=1, device=torch.device("cpu"), amp=False
    )
    assert s["test_images_evaluated"] == 7 and (s["params"], s["macs"]) == (1, 2)
    cfg = TrainConfig(limit_test_batches=1, batch_size=3)
    s = run_summary(
        cfg, data, Count(1, 2), {}, steps=0, seconds=0.0, world_size=1, device=torch.device("cpu"), amp=False
    )
    assert s["test_images_evaluated"] == 7  # min(7, 1 x max(3, 256))
    last = {"test_error": 1.5, "test_loss": 0.25, "val_error": 2.5, "epoch": 4}
    s = run_summary(
        cfg, data, Count(1, 2), last, steps=3, seconds=1.0, world_size=2, device=torch.device("cpu"), amp=True
    )
    assert (s["test_error"], s["test_loss"], s["val_error"], s["eval_epoch"]) == (1.5, 0.25, 2.5, 4)
    assert (s["steps"], s["seconds"], s["world_size"], s["amp"]) == (3, 1.0, 2, True)


def test_missing_checkpoint_is_named(tmp_path):
    from e4net.train.checkpoint import CheckpointError, load_checkpoint

    with pytest.raises(CheckpointError, match=rf"^checkpoint {tmp_path / 'none.pt'} not found$"):
        load_checkpoint(tmp_path / "none.pt")
