"""Shipped weights: ``create_model(name, pretrained=True)``, their records, and ``e4net publish`` that writes them."""

from __future__ import annotations

import json

import pytest
import torch

from e4net.data import load_dataset
from e4net.errors import E4NetError
from e4net.models import available_pretrained, create_model, pretrained_record
from e4net.models import pretrained as P
from e4net.train import TrainConfig, train
from e4net.train.evaluation import evaluate
from e4net.train.publish import publish_weights

SHIPPED = ("e4net", "p4cnn")
TINY_RUN = dict(model="tiny-e4", dataset="digits", epochs=2, batch_size=20, train_per_class=4, limit_test_batches=1,
                progress=False, device="cpu", lr=0.01)  # fmt: skip


def _prepare(record: P.PretrainedRecord, x: torch.Tensor) -> torch.Tensor:
    norm = record.normalisation
    x = x.float() * norm["scale"]
    if norm["mean"] is not None:
        x = (x - torch.tensor(norm["mean"]).view(1, -1, 1, 1)) / torch.tensor(norm["std"]).view(1, -1, 1, 1)
    return x


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_are_invariant_and_classify_embedded_digits(name):
    """The weights in the package load strictly, the model is exactly invariant to the group, and it classifies the
    first 200 test digits embedded in e4net (rotated MNIST digits it never saw) about as well as its record says."""
    assert name in available_pretrained()
    model = create_model(name, pretrained=True)
    record = pretrained_record(name)
    assert not model.training and model.pretrained_cfg["test_error"] == record.test_error
    assert (
        record.dataset == "mnist-rot"
        and len(record.data_sha256) == 64
        and "e4net train --model " + name in record.command
    )
    digits = load_dataset("digits")
    x, y = _prepare(record, digits.test.x[:200]), digits.test.y[:200]
    with torch.no_grad():
        logits = model(x)
        for r in (1, 2, 3):
            torch.testing.assert_close(model(torch.rot90(x, r, (2, 3))), logits, atol=1e-4, rtol=1e-4)
    error = 100.0 * (logits.argmax(1) != y).float().mean().item()
    assert error <= max(3 * record.test_error, 10.0), f"{name}: {error:.1f}% on embedded digits"


@pytest.mark.data
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reach_their_recorded_test_error(name, shared_data):
    """On the replica's test split (whose file has the recorded SHA-256), the shipped weights give the recorded
    final-epoch test error (to 0.05 points: summation order may flip a prediction or two across machines)."""
    record = pretrained_record(name)
    data_file = shared_data / record.data_file
    from e4net.data import file_digest

    if file_digest(data_file, "sha256") != record.data_sha256:
        pytest.skip(f"{data_file} is not the file the weights were evaluated on")
    data = load_dataset("mnist-rot", shared_data, verify=False)
    model = create_model(name, pretrained=True)
    res = evaluate(model, data.test, prepare=lambda x: _prepare(record, x), batch_size=500, device=torch.device("cpu"))
    assert res["n"] == record.test_images
    assert res["error"] == pytest.approx(record.test_error, abs=0.05)


def test_pretrained_without_weights_is_one_clear_error():
    with pytest.raises(ValueError, match=r"no shipped weights for model 'p4-r18'.*models with weights: "):
        create_model("p4-r18", pretrained=True)
    with pytest.raises(ValueError, match="have 10 classes; num_classes=5"):
        create_model("e4net", num_classes=5, pretrained=True)
    with pytest.raises(ValueError, match=r"overrides \['fields'\] need pretrained=False"):
        create_model("e4net", pretrained=True, fields=8)


def test_publish_then_create_model_pretrained_round_trip(tmp_path, monkeypatch):
    """A finished run -> ``publish_weights`` -> ``create_model(pretrained=True)`` gives the run's weights and record;
    an unfinished run is refused."""
    import _tiny_models  # noqa: F401 - registers tiny-e4

    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))
    summary = train(TrainConfig(out=str(tmp_path / "run"), **TINY_RUN))
    record = publish_weights(tmp_path / "run", "e4net train --model tiny-e4 (test)", tmp_path / "w")
    assert record.test_error == summary["test_error"] and record.epochs == 2 and record.data_sha256 == ""
    assert json.loads((tmp_path / "w" / "tiny-e4.json").read_text())["command"] == "e4net train --model tiny-e4 (test)"
    monkeypatch.setattr(P, "WEIGHTS_DIR", tmp_path / "w")
    assert available_pretrained() == ["tiny-e4"]
    model = create_model("tiny-e4", pretrained=True)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model_state"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    assert model.pretrained_cfg["model"] == "tiny-e4"
    (tmp_path / "w" / "tiny-e4.safetensors").write_bytes(b"damaged")
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error for a damaged file
        create_model("tiny-e4", pretrained=True)
    train(TrainConfig(out=str(tmp_path / "paused"), max_steps=1, **TINY_RUN))
    with pytest.raises(E4NetError, match="only a finished run|finish it first"):
        publish_weights(tmp_path / "paused", "x", tmp_path / "w2")
