"""A model for deployment from a run folder, a checkpoint or a registered name (:func:`load_source`), and its top
classes for image files (:func:`predict_files`); behind ``e4net predict`` and ``e4net export``.

A run folder or checkpoint file gives the trained weights and the training run's input normalisation
(:func:`~e4net.train.load_trained`); a registered model name gives ``create_model(name, pretrained=...)``: the
shipped weights with ``pretrained=True``, else freshly initialised ones (useful for export tests, not for
predictions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..deploy.images import read_images
from ..errors import E4NetError
from ..models import create_model, list_models, model_spec
from .load import Normalisation, load_trained

__all__ = ["ModelSource", "load_source", "Prediction", "predict_files", "predict_batch"]


@dataclass(frozen=True)
class ModelSource:
    """A model in eval mode with what it takes as input: ``input_shape`` ``(C, H, W)`` (``(C, D, H, W)`` for a 3-D
    model), ``normalisation`` of its training run (None: inputs in [0, 1]); ``trained``: weights from a checkpoint
    or shipped ones."""

    model: nn.Module
    name: str
    input_shape: tuple[int, ...]
    normalisation: Normalisation | None
    source: str
    trained: bool


def load_source(source: str | Path, *, pretrained: bool = False) -> ModelSource:
    """The model of ``source``: an existing run folder / checkpoint file, else a registered model name.

    ``pretrained`` (names only) asks ``create_model(name, pretrained=True)`` for shipped weights; its error passes
    through when there are none. An unknown name that is not a path either is one E4NetError naming both.
    """
    path = Path(source)
    if path.exists():
        if pretrained:
            raise E4NetError(f"--pretrained applies to registered model names, not to the run {path}")
        t = load_trained(path)
        shape = tuple(t.input_shape)
        return ModelSource(t.model.eval(), t.name, shape, t.normalisation, str(t.source), True)
    name = str(source)
    if name not in list_models():
        raise E4NetError(
            f"{name!r} is neither a run folder / checkpoint nor a registered model; models: {', '.join(list_models())}"
        )
    model = create_model(name, pretrained=True) if pretrained else create_model(name)
    return ModelSource(model.eval(), name, model_spec(name).input_shape, None, name, pretrained)


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image: ``(class index, probability)`` pairs, most probable first."""

    file: str
    top: list[tuple[int, float]]


def predict_batch(model: nn.Module, x: torch.Tensor, top: int) -> list[list[tuple[int, float]]]:
    """Softmax of ``model(x)`` (eval mode, no grad); the ``top`` most probable classes of every example."""
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), -1)
    k = min(top, probs.shape[-1])
    values, indices = probs.topk(k, -1)
    return [[(int(i), float(v)) for i, v in zip(ix, vx)] for ix, vx in zip(indices, values)]


def predict_files(source: ModelSource, files: Sequence[str | Path], top: int = 3) -> list[Prediction]:
    """The ``top`` classes of every image file for the model of ``source`` (:func:`e4net.deploy.read_images`)."""
    if top < 1:
        raise E4NetError(f"--top must be at least 1, got {top}")
    norm = source.normalisation
    mean, std = (norm.mean, norm.std) if norm is not None else (None, None)
    x = read_images(files, source.input_shape, mean, std)
    return [Prediction(str(f), t) for f, t in zip(files, predict_batch(source.model, x, top))]
