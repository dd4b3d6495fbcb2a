"""``e4net predict`` on PNG / JPEG files cut from the embedded digits with a quickly trained tiny run (the top class is
the model's own prediction on the same tensor), image conversion (grey / RGB, resize, normalisation), one clear
error per bad file; ``e4net export`` from a run folder."""

from __future__ import annotations

import json

import _tiny_models  # noqa: F401 - registers the tiny test models
import numpy as np
import pytest
import torch
from PIL import Image

from e4net.cli.main import main
from e4net.deploy.images import read_image, read_images
from e4net.errors import E4NetError
from e4net.train import TrainConfig, load_trained, train

TRAIN = dict(dataset="digits", epochs=2, batch_size=50, train_per_class=30, limit_test_batches=1, progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny E4 model trained on the digits for a few steps (12 SGD steps, ~2 s)."""
    root = tmp_path_factory.mktemp("predict")
    train(TrainConfig(model="tiny-e4", out=str(root / "run"), **TRAIN))
    return root / "run"


@pytest.fixture(scope="module")
def digits_png(tmp_path_factory):
    """Eight test digits as 8-bit grey PNG files, and their labels."""
    from e4net.data import load_dataset

    data = load_dataset("digits")
    folder = tmp_path_factory.mktemp("digits")
    files, labels = [], []
    for i in range(8):
        img = (data.test.x[i, 0].numpy() * 255).round().astype(np.uint8)
        path = folder / f"digit{i}_label{int(data.test.y[i])}.png"
        Image.fromarray(img, mode="L").save(path)
        files.append(path)
        labels.append(int(data.test.y[i]))
    return files, labels


def _predict(capsys, *argv):
    rc = main(["predict", *map(str, argv)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap


def test_predict_png_digits_matches_the_model_on_the_same_tensor(run_dir, digits_png, capsys):
    files, labels = digits_png
    rc, cap = _predict(capsys, run_dir, *files, "--json", "--top", "3")
    assert rc == 0
    doc = json.loads(cap.out)
    assert doc["model"] == "tiny-e4" and len(doc["predictions"]) == len(files)
    trained = load_trained(run_dir)
    x = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255.0)[None] for f in files]
    )  # the PNG's pixels, as the data set's [0, 1] values (the digits have no normalisation)
    with torch.no_grad():
        probs = torch.softmax(trained.model(x).double(), -1)
    for i, pred in enumerate(doc["predictions"]):
        assert pred["file"] == str(files[i])
        top = pred["top"]
        assert len(top) == 3 and [t["probability"] for t in top] == sorted(
            (t["probability"] for t in top), reverse=True
        )
        assert top[0]["class"] == int(probs[i].argmax())
        for t in top:
            assert t["probability"] == pytest.approx(float(probs[i, t["class"]]), abs=1e-6)
    rc, cap = _predict(capsys, run_dir, *files[:2], "--top", "2")
    lines = cap.out.strip().splitlines()
    assert rc == 0 and lines[0].startswith("model tiny-e4") and len(lines) == 3
    assert lines[1].startswith(f"{files[0]}: ") and lines[1].count("%") == 2


def test_predict_reads_jpeg_rgb_grey_and_larger_images_of_the_same_aspect(run_dir, digits_png, capsys, tmp_path):
    files, _ = digits_png
    grey = np.asarray(Image.open(files[0]))
    Image.fromarray(np.stack([grey] * 3, -1), mode="RGB").save(tmp_path / "rgb.png")  # grey in fact: accepted
    Image.fromarray(grey).resize((56, 56), Image.BILINEAR).save(tmp_path / "big.png")
    Image.fromarray(grey).save(tmp_path / "digit.jpg", quality=95)
    rc, cap = _predict(capsys, run_dir, tmp_path / "rgb.png", tmp_path / "big.png", tmp_path / "digit.jpg", "--json")
    assert rc == 0
    tops = [p["top"][0]["class"] for p in json.loads(cap.out)["predictions"]]
    rc, cap = _predict(capsys, run_dir, files[0], "--json")
    assert tops[0] == json.loads(cap.out)["predictions"][0]["top"][0]["class"]  # same pixels, same prediction


def _bad_files(tmp_path):
    grey = (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)
    colour = (np.random.default_rng(1).random((28, 28, 3)) * 255).astype(np.uint8)
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(grey).save(tmp_path / "digit.gif")
    Image.fromarray(grey).crop((0, 0, 28, 20)).save(tmp_path / "wide.png")
    Image.fromarray(colour, mode="RGB").save(tmp_path / "colour.png")
    rgba = np.concatenate([colour, np.full((28, 28, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "colour.png").read_bytes()[:60])
    return {
        "missing.png": "no such file",
        "notes.png": "not an image file (expected PNG or JPEG)",
        "digit.gif": "a GIF image; expected PNG or JPEG",
        "wide.png": "a 28x20 image (width x height), but the model takes 28x28 images",
        "colour.png": "a colour (RGB) image, but the model takes grey images",
        "alpha.png": "transparent pixels",
        "truncated.png": "cannot read the image",
    }


def test_bad_files_are_one_clear_error_each(run_dir, digits_png, capsys, tmp_path):
    for name, msg in _bad_files(tmp_path).items():
        rc, cap = _predict(capsys, run_dir, digits_png[0][0], tmp_path / name)
        err = cap.err.strip().splitlines()
        assert rc == 1 and len(err) == 1, (name, cap.err)
        assert err[0].startswith(f"e4net predict: error: {tmp_path / name}: ") and msg in err[0], (name, err)
    rc, cap = _predict(capsys, tmp_path / "no-run", digits_png[0][0])
    assert rc == 1 and "neither a run folder" in cap.err
    rc, cap = _predict(capsys, run_dir, digits_png[0][0], "--top", "0")
    assert rc == 1 and "--top must be at least 1" in cap.err


def test_read_image_channels_resize_and_normalisation(tmp_path):
    grey = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    x = read_image(tmp_path / "g.png", (3, 8, 8), mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 2.0])
    base = torch.from_numpy(grey.astype(np.float32) / 255.0)
    assert x.shape == (3, 8, 8)
    assert torch.allclose(x[0], (base - 0.5) / 0.5) and torch.allclose(x[2], base / 2.0)
    small = read_image(tmp_path / "g.png", (1, 4, 4))
    assert small.shape == (1, 4, 4) and 0.0 <= float(small.min()) and float(small.max()) <= 1.0
    assert read_images([tmp_path / "g.png"] * 2, (1, 8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(E4NetError, match="no image files"):
        read_images([], (1, 8, 8))
    with pytest.raises(E4NetError, match="1 \\(grey\\) or 3 \\(RGB\\) channels, not 2"):
        read_image(tmp_path / "g.png", (2, 8, 8))


@pytest.mark.slow
def test_export_cli_from_a_run_folder(run_dir, capsys, tmp_path):
    out = tmp_path / "tiny.pt2"
    assert main(["export", str(run_dir), "--format", "torch", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("model   tiny-e4") and str(out) in lines[1] and "KiB" in lines[1]
    assert "max abs diff" in lines[2] and "max rel diff" in lines[2]
    rel = float(lines[2].split("max rel diff ")[1].split()[0])
    assert rel < 1e-5
    program = torch.export.load(out).module()
    trained = load_trained(run_dir)
    x = torch.randn(5, 1, 28, 28)  # another batch size: the batch dimension is dynamic
    with torch.no_grad():
        assert torch.allclose(program(x), trained.model(x), atol=1e-5)


@pytest.mark.slow
def test_export_cli_onnx(run_dir, capsys, tmp_path):
    pytest.importorskip("onnxruntime", reason='ONNX export needs the "export" extra: pip install -e ".[export]"')
    pytest.importorskip("onnxscript", reason='ONNX export needs the "export" extra: pip install -e ".[export]"')
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(onnx, " in text and float(text.split("max rel diff ")[1].split()[0]) < 1e-4


def test_export_cli_errors(run_dir, capsys, tmp_path):
    cases = [
        (["nosuch", "--format", "torch", "--out", str(tmp_path / "a.pt2")], "neither a run folder"),
        (["p4cnn", "--format", "torch", "--out", str(tmp_path / "no" / "a.pt2")], "does not exist"),
        (["p4cnn", "--format", "torch", "--out", str(tmp_path)], "is a folder"),
        ([str(run_dir), "--format", "torch", "--out", str(tmp_path / "a.pt2"), "--pretrained"], "--pretrained"),
    ]
    for argv, msg in cases:
        assert main(["export", *argv]) == 1
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_pretrained_goes_to_create_model(capsys, tmp_path):
    """``--pretrained`` exports the shipped weights; a model without any is one clear error."""
    rc = main(["export", "e4net", "--format", "torch", "--out", str(tmp_path / "e.pt2"), "--pretrained"])
    cap = capsys.readouterr()
    assert rc == 0 and "Traceback" not in cap.err, cap.err
    assert (tmp_path / "e.pt2").stat().st_size > 0
    assert main(["export", "r18", "--format", "torch", "--out", str(tmp_path / "r.pt2"), "--pretrained"]) == 1
    err = capsys.readouterr().err
    assert "no shipped weights for model 'r18'" in err and len(err.strip().splitlines()) == 1
