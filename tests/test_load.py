"""``e4net.train.load_trained``: a run folder (or checkpoint file) back to the trained model in eval mode with its
input normalisation; the same logits as the model at the end of training; one clear error for a bad path."""

from __future__ import annotations

import dataclasses

import _tiny_models  # noqa: F401 - registers the tiny test models
import pytest
import torch

from e4net.data import load_dataset
from e4net.train import CheckpointError, Normalisation, TrainConfig, load_trained, train
from e4net.train.trainer import Trainer

TINY = dict(model="tiny-bn", dataset="digits", epochs=1, batch_size=32, train_per_class=10, limit_test_batches=1,
            progress=False)  # fmt: skip


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A tiny finished run: its folder and the model object as training left it."""
    finished = []
    finish = Trainer.finish

    def keep_model(self):
        finished.append(self.model)
        return finish(self)

    monkeypatch.setattr(Trainer, "finish", keep_model)
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), **TINY))
    return out, finished[0]


def test_round_trip_gives_the_trained_models_logits(run):
    out, model = run
    loaded = load_trained(out)
    assert not loaded.model.training and loaded.model is not model
    assert (loaded.name, loaded.dataset, loaded.num_classes, loaded.input_shape) == (
        "tiny-bn",
        "digits",
        10,
        (1, 28, 28),
    )
    assert loaded.epoch == 1 and loaded.source == out / "checkpoint.pt" and loaded.config["seed"] == 0
    data = load_dataset("digits")
    assert loaded.normalisation == Normalisation(data.scale, data.mean, data.std)
    x = loaded.prepare_for(data)(data.test.x[:64])
    assert torch.equal(x, data.prepare(data.test.x[:64]))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model.eval()(x))
    assert load_trained(out / "checkpoint.pt", model="tiny-bn").name == "tiny-bn"  # a file works as well


def test_the_training_normalisation_is_passed_explicitly(run, tmp_path):
    out, _ = run
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    ck["normalisation"] = {"scale": 1.0, "mean": [0.5], "std": [2.0]}
    torch.save(ck, tmp_path / "norm.pt")
    loaded = load_trained(tmp_path / "norm.pt")
    data = load_dataset("digits")
    before = (data.scale, data.mean, data.std)
    x = data.test.x[:4]
    torch.testing.assert_close(loaded.prepare_for(data)(x), (x.float() * data.scale - 0.5) / 2.0, rtol=0, atol=0)
    assert (data.scale, data.mean, data.std) == before  # the data set is not changed
    other = dataclasses.replace(data, name="mnist-rot")  # another data set: its own statistics
    assert loaded.prepare_for(other) == other.prepare


def test_bad_paths_give_one_clear_error(run, tmp_path):
    out, _ = run
    with pytest.raises(CheckpointError, match="not found"):
        load_trained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not found"):
        load_trained(tmp_path)  # a folder without a checkpoint
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="not a readable e4net checkpoint"):
        load_trained(tmp_path / "junk.pt")
    (tmp_path / "cut.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_trained(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="checkpoint of model 'tiny-bn', not 'tiny-e4'"):
        load_trained(out, model="tiny-e4")
