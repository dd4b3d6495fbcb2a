"""Building a registered model for a data set, and loading a trained one back from its run folder.

:func:`load_trained` returns a :class:`TrainedModel`: the model in eval mode with the weights of the checkpoint,
and what it expects as input: the data set it was trained on, its number of classes, the input shape, and the
input normalisation of its training run (``(x * scale - mean) / std`` per channel; CIFAR's per-channel statistics
of the training split, Sec. 5.2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import DataSet
from ..errors import E4NetError
from ..models import create_model, model_spec
from .checkpoint import CheckpointError, load_checkpoint, load_model_state
from .outputs import CHECKPOINT


def build_model(
    name: str, num_classes: int, model_args: dict[str, Any], input_shape: tuple[int, ...]
) -> torch.nn.Module:
    """``create_model(name, num_classes=..., **model_args)``, refused when the model is built for inputs of
    another shape than ``input_shape`` (e.g. a CIFAR model on MNIST-style digits)."""
    spec = model_spec(name)
    if tuple(spec.input_shape) != tuple(input_shape):
        raise E4NetError(
            f"model {name!r} is built for {spec.dataset} inputs {tuple(spec.input_shape)}, but this data set gives "
            f"{tuple(input_shape)}; choose a model for it (e4net models lists them)"
        )
    return create_model(name, num_classes=num_classes, **model_args)


@dataclass(frozen=True)
class Normalisation:
    """The input normalisation of a training run: ``(x * scale - mean) / std`` per channel (no ``mean``/``std``:
    scaling only), as :meth:`e4net.data.DataSet.prepare` applies it."""

    scale: float
    mean: list[float] | None
    std: list[float] | None


@dataclass(frozen=True)
class TrainedModel:
    """A trained model (eval mode) with what it expects as input; ``epoch``: the epochs it was trained for,
    ``source``: the checkpoint file, ``config``: the settings of its run (:class:`~e4net.train.TrainConfig`)."""

    model: torch.nn.Module
    name: str
    model_args: dict[str, Any]
    dataset: str
    num_classes: int
    input_shape: tuple[int, ...]
    normalisation: Normalisation | None
    epoch: int
    source: Path
    config: dict[str, Any]

    def prepare_for(self, data: DataSet) -> Callable[[torch.Tensor], torch.Tensor]:
        """The function that turns ``data``'s stored images into this model's inputs: ``data.prepare`` with the
        normalisation of the training run when ``data`` is the data set the model was trained on (its own
        statistics otherwise). ``data`` itself is not changed."""
        norm = self.normalisation
        if norm is None or data.name != self.dataset:
            return data.prepare
        return dataclasses.replace(data, scale=norm.scale, mean=norm.mean, std=norm.std).prepare


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a run folder."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_trained(path: str | Path, *, model: str | None = None) -> TrainedModel:
    """Load the model saved by ``e4net train`` in the run folder (or checkpoint file) ``path``, on the CPU.

    Raises one :class:`~e4net.train.checkpoint.CheckpointError` when ``path`` is missing, is not a readable e4net
    checkpoint, holds another model than ``model`` (when given), or holds weights that do not fit its model.
    """
    path = checkpoint_file(path)
    ckpt = load_checkpoint(path)
    name = ckpt["model"]
    if model and model != name:
        raise CheckpointError(f"{path} is a checkpoint of model {name!r}, not {model!r}")
    input_shape = tuple(ckpt["input_shape"])
    net = build_model(name, ckpt["num_classes"], ckpt.get("model_args", {}), input_shape)
    load_model_state(net, ckpt["model_state"], str(path), name)
    norm = ckpt.get("normalisation")
    return TrainedModel(
        model=net.eval(),
        name=name,
        model_args=dict(ckpt.get("model_args", {})),
        dataset=ckpt["dataset"],
        num_classes=ckpt["num_classes"],
        input_shape=input_shape,
        normalisation=Normalisation(norm["scale"], norm["mean"], norm["std"]) if norm else None,
        epoch=ckpt["epoch"],
        source=path,
        config=dict(ckpt.get("config", {})),
    )
