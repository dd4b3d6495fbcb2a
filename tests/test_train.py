"""Training: recipes, outputs (summary / metrics / checkpoint), exact resume, NaN handling, bad input via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import _tiny_models  # noqa: F401 - registers the tiny test models
import pytest
import torch

from e4net.cli.main import main
from e4net.train import TrainConfig, TrainingDiverged, train
from e4net.train.checkpoint import load_checkpoint
from e4net.train.recipes import CIFAR, MNIST_ROT, RECIPES, lr_at

TINY = dict(model="tiny-bn", dataset="digits", epochs=2, batch_size=32, train_per_class=20, limit_train_batches=4,
            limit_test_batches=1, progress=False)  # fmt: skip


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))


def _cfg(out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(out), **kw})


# ---- recipes -----------------------------------------------------------------------------------------------


def test_paper_recipes():
    assert (MNIST_ROT.optimizer, MNIST_ROT.lr, MNIST_ROT.weight_decay, MNIST_ROT.batch_size, MNIST_ROT.epochs) == (
        "adam", 0.02, 1e-4, 128, 200)  # fmt: skip
    assert MNIST_ROT.milestones == (60, 120, 160) and MNIST_ROT.gamma == 0.1
    assert (CIFAR.optimizer, CIFAR.lr, CIFAR.momentum, CIFAR.nesterov, CIFAR.weight_decay) == (
        "sgd",
        0.1,
        0.9,
        True,
        5e-4,
    )
    assert CIFAR.milestones == (60, 120, 160) and CIFAR.gamma == 0.2 and RECIPES["cifar100"] == CIFAR
    assert MNIST_ROT.rescaled(20).milestones == pytest.approx((6, 12, 16))
    c = TrainConfig(dataset="cifar10", epochs=50, lr=0.05).resolved()
    assert c.model == "p4-e4r18" and c.lr == 0.05 and c.milestones == pytest.approx([15, 30, 40]) and c.nesterov


def test_lr_schedule_steps_at_milestones():
    ms = [3, 6]
    assert [lr_at(s, 1.0, ms, 0.1) for s in range(8)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])


# ---- a tiny run and its outputs ---------------------------------------------------------------------------------


def test_train_writes_summary_metrics_checkpoint(tmp_path):
    out = tmp_path / "run"
    s = train(_cfg(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(s))
    for key in ("test_error", "params", "macs", "epochs", "seconds"):
        assert key in summary
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and lines[-1]["step"] == 8
    assert summary["test_error"] == lines[-1]["test_error"]  # the final epoch's, never a chosen one
    assert summary["params"] == sum(p.numel() for p in _tiny_models.TinyPlain(norm=True).parameters())
    assert summary["macs"] > 0
    assert all(0 <= x["data_wait_frac"] < 1 for x in lines)
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["epoch"] == 2 and ck["step"] == 8 and ck["model"] == "tiny-bn"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "checkpoint.pt")["model_state"]


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.parametrize(
    ("pause_at", "model"), [(6, "tiny-bn"), (4, "tiny-bn"), pytest.param(5, "tiny-e4", marks=pytest.mark.slow)]
)
def test_resume_is_exact(tmp_path, pause_at, model):
    """Mid-epoch, exactly at an epoch boundary, and with an E4 layer: bitwise-equal final weights."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    small = dict(batch_size=16, train_per_class=8) if model == "tiny-e4" else {}  # the E4 layer is slow on CPU
    s_ref = train(_cfg(ref, model=model, **small))
    paused = train(_cfg(cut, max_steps=pause_at, model=model, **small))
    assert paused["status"] == "paused" and load_checkpoint(cut / "checkpoint.pt")["step"] == pause_at
    assert not (cut / "summary.json").exists()
    s_cut = train(TrainConfig(out=str(cut), resume=True, progress=False))
    _assert_bitwise_equal(_final_state(ref), _final_state(cut))
    assert s_cut["test_error"] == s_ref["test_error"] and s_cut["steps"] == s_ref["steps"] == 8
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if "seconds" not in k and "per_s" not in k  # noqa: E731
                            and "wait" not in k} for x in lines.splitlines()]  # fmt: skip
    assert strip((ref / "metrics.jsonl").read_text()) == strip((cut / "metrics.jsonl").read_text())


def test_resume_test_detects_a_lost_optimizer_state(tmp_path, monkeypatch):
    """The planted bug: a resume that forgets Adam's moments. The bitwise comparison must catch it."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    train(_cfg(ref))
    train(_cfg(cut, max_steps=6))
    monkeypatch.setattr(torch.optim.Adam, "load_state_dict", lambda self, state: None)
    train(TrainConfig(out=str(cut), resume=True, progress=False))
    with pytest.raises(AssertionError, match="differs"):
        _assert_bitwise_equal(_final_state(ref), _final_state(cut))


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    out = tmp_path / "run"
    train(_cfg(out))
    before = _final_state(out)
    s = train(TrainConfig(out=str(out), resume=True, progress=False))
    _assert_bitwise_equal(before, _final_state(out))
    assert s["status"] == "completed" and len((out / "metrics.jsonl").read_text().splitlines()) == 2


# ---- NaN ---------------------------------------------------------------------------------------------------------


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"at step 6 \(epoch 2, batch 2\).*step 4\), kept unchanged"):
        train(_cfg(out, model="tiny-nan"))
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["step"] == 4 and all(torch.isfinite(v).all() for v in ck["model_state"].values() if v.is_floating_point())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 and not (out / "summary.json").exists()


# ---- bad input through the CLI: one message, exit 1, no traceback, nothing lost ---------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["train", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("e4net train: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_tiny_run(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "tiny-e4", "--epochs", "1", "--batch-size", "50", "--train-per-class", "10",
               "--limit-test-batches", "1", "--no-progress", "--out", str(out), "--seed", "3",
               "--model-arg", "width=2"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0 and "test error" in captured.out
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 3 and s["model_args"] == {"width": 2} and s["train_size"] == 100 and s["epochs"] == 1


def test_cli_nan(tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = _cli(capsys, "--model", "tiny-nan", "--epochs", "2", "--batch-size", "32", "--train-per-class", "20",
                   "--limit-train-batches", "4", "--limit-test-batches", "1", "--out", str(out))  # fmt: skip
    assert rc == 1 and "step 6" in _error_line(err)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4


def test_cli_missing_data(tmp_path, capsys):
    rc, err = _cli(
        capsys,
        "--model",
        "tiny-e4",
        "--dataset",
        "mnist-rot",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    )
    assert rc == 1 and "not found" in _error_line(err) and "--download" in err


def test_cli_corrupt_data(tmp_path, capsys):
    (tmp_path / "mnist_rotation_new.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    rc, err = _cli(
        capsys,
        "--model",
        "tiny-e4",
        "--dataset",
        "mnist-rot",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    )
    assert rc == 1 and "corrupt" in _error_line(err)


def test_cli_checksum_mismatch(tmp_path, capsys):
    from test_data import _cifar100_archive

    _cifar100_archive(tmp_path / "cifar-100-python.tar.gz")
    rc, err = _cli(
        capsys,
        "--model",
        "tiny-cifar",
        "--dataset",
        "cifar100",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    )
    assert rc == 1 and "--no-verify" in _error_line(err) and "checksum" in err


def test_cli_checkpoint_of_another_model(tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(out, epochs=1))
    before = (out / "checkpoint.pt").read_bytes()
    rc, err = _cli(capsys, "--model", "tiny-bn-other", "--out", str(out), "--resume")
    assert rc == 1 and "checkpoint of model 'tiny-bn'" in _error_line(err)
    # The same model name but a checkpoint whose tensors do not fit (another architecture saved under its name).
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    ck["model"] = ck["config"]["model"] = "tiny-bn-other"
    torch.save(ck, out / "checkpoint.pt")
    rc, err = _cli(capsys, "--out", str(out), "--resume")
    assert rc == 1 and "does not fit model 'tiny-bn-other'" in _error_line(err)
    (out / "checkpoint.pt").write_bytes(before)
    rc, err = _cli(capsys, "--out", str(out), "--resume", "--lr", "0.5")
    assert rc == 1 and "--lr 0.5 (checkpoint: 0.02)" in _error_line(err)
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing already written is lost


def test_cli_refuses_to_overwrite_and_reports_corrupt_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(out, epochs=1))
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, err = _cli(capsys, "--model", "tiny-bn", "--out", str(out))
    assert rc == 1 and "--resume" in _error_line(err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    (out / "checkpoint.pt").write_bytes(files["checkpoint.pt"][:1000])
    rc, err = _cli(capsys, "--out", str(out), "--resume")
    assert rc == 1 and "not a readable e4net checkpoint" in _error_line(err)


def test_cli_bad_values(tmp_path, capsys):
    rc, err = _cli(capsys, "--model", "tiny-e4", "--epochs", "0", "--out", str(tmp_path / "o"))
    assert rc == 1 and "--epochs" in _error_line(err)
    rc, err = _cli(capsys, "--model", "tiny-cifar", "--out", str(tmp_path / "o"))
    assert rc == 1 and "built for cifar10" in _error_line(err)
    rc, err = _cli(capsys, "--model", "no-such-model", "--out", str(tmp_path / "o"))
    assert rc == 1 and "unknown model" in _error_line(err)


@pytest.mark.gpu
def test_cuda_amp_channels_last_run(tmp_path):
    s = train(_cfg(tmp_path / "run", device="cuda", channels_last=True))
    assert s["device"].startswith("cuda") and s["amp"] is True and s["test_error"] is not None
