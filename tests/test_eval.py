"""``e4net eval``: test error, params, MACs, and an invariance error that is round-off for an invariant model and
large for a plain CNN (the planted counter-example); bad checkpoints give one clear error."""

from __future__ import annotations

import json

import _tiny_models  # noqa: F401 - registers the tiny test models
import pytest

from e4net.cli.main import main
from e4net.train import TrainConfig, train

TINY = dict(dataset="digits", epochs=1, batch_size=50, train_per_class=10, limit_test_batches=1, progress=False)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))


def _eval(capsys, *argv):
    rc = main(["eval", *argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap


@pytest.mark.parametrize("model, invariant", [("tiny-bn", True), ("tiny-cnn", False)])
def test_eval_reports_error_counts_and_invariance(tmp_path, capsys, model, invariant):
    out = tmp_path / model
    s = train(TrainConfig(model=model, out=str(out), **TINY))
    rc, cap = _eval(
        capsys, str(out), "--limit-test-batches", "1", "--batch-size", "256", "--json", str(tmp_path / "r.json")
    )
    assert rc == 0 and "invariance error" in cap.out and "test error" in cap.out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["test_error"] == pytest.approx(s["test_error"])  # same images, same weights as the final epoch
    assert r["params"] == s["params"] and r["macs"] == s["macs"] and r["test_images"] == 256
    assert set(r["invariance_error_by_element"]) == {"e", "r1", "r2", "r3"}
    assert r["invariance_error_by_element"]["e"] == 0.0
    if invariant:
        assert r["invariance_error"] < 1e-5
    else:
        assert r["invariance_error"] > 1e-3 and "no group" in r["group"]


def test_eval_bad_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    train(TrainConfig(model="tiny-bn", out=str(out), **TINY))
    rc, cap = _eval(capsys, str(out), "--model", "tiny-e4")
    assert rc == 1 and "checkpoint of model 'tiny-bn', not 'tiny-e4'" in cap.err
    rc, cap = _eval(capsys, str(tmp_path / "missing.pt"))
    assert rc == 1 and "not found" in cap.err
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04junk")
    rc, cap = _eval(capsys, str(tmp_path / "junk.pt"))
    assert rc == 1 and "not a readable e4net checkpoint" in cap.err
    rc, cap = _eval(capsys, str(out), "--dataset", "cifar100", "--data-root", str(tmp_path))
    assert rc == 1 and "e4net eval: error:" in cap.err
