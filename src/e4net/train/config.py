"""The settings of a training run (:class:`TrainConfig`) and the files of its run folder.

``None`` fields fall back on the paper's recipe for the data set (:mod:`e4net.train.recipes`, Sec. 5.1 / 5.2).
The fields in :data:`RUN_FIELDS` define the run and must match when it is resumed; the others (device, mixed
precision, progress bar, ...) may change between sessions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import E4NetError
from .checkpoint import CheckpointError
from .recipes import Recipe, recipe_for

DEFAULT_MODEL = {
    "digits": "e4net", "mnist-rot": "e4net", "cifar10": "p4-e4r18", "cifar100": "p4-e4r18", "digits3d": "e4net3d",
}  # fmt: skip

# Settings that define the run (and must match on --resume); the others may change between sessions.
RUN_FIELDS = (
    "model", "dataset", "epochs", "batch_size", "lr", "weight_decay", "optimizer", "momentum", "nesterov",
    "milestones", "gamma", "seed", "train_per_class", "val_size", "model_args", "limit_train_batches",
)  # fmt: skip

# Settings of a session: on --resume they come from the command line, not from the checkpoint.
SESSION_FIELDS = ("device", "amp", "channels_last", "verify", "checksum", "download", "max_steps", "progress")
# Settings that only shape the report: on --resume they carry over from the saved run unless given again.
REPORT_FIELDS = ("limit_test_batches", "eval_every")


@dataclass
class TrainConfig:
    """Settings of one run; ``None`` means "the recipe's value" (or, for ``model``, the data set's default)."""

    model: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    out: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    milestones: list[float] | None = None
    gamma: float | None = None
    seed: int | None = None
    train_per_class: int | None = None
    val_size: int = 0
    model_args: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = False
    resume: bool = False
    verify: bool = True
    checksum: str | None = None
    download: bool = False
    limit_train_batches: int | None = None
    limit_test_batches: int | None = None
    max_steps: int | None = None
    eval_every: int | None = None
    progress: bool = True

    def resolved(self) -> TrainConfig:
        """Fill ``None`` fields from the recipe of the data set; ``--epochs`` rescales the milestones."""
        c = dataclasses.replace(self)
        c.dataset = self.dataset or "digits"
        c.seed = self.seed if self.seed is not None else 0
        recipe: Recipe = recipe_for(c.dataset)
        epochs = self.epochs if self.epochs is not None else recipe.epochs
        r = recipe.rescaled(epochs) if epochs != recipe.epochs else recipe
        c.model = self.model or DEFAULT_MODEL[c.dataset]
        c.epochs = epochs
        for name in ("batch_size", "lr", "weight_decay", "optimizer", "momentum", "nesterov", "gamma"):
            if getattr(c, name) is None:
                setattr(c, name, getattr(r, name))
        c.milestones = list(self.milestones) if self.milestones is not None else list(r.milestones)
        c.out = self.out or str(Path("runs") / f"{c.model}-{c.dataset}-seed{c.seed}")
        c.eval_every = self.eval_every or 1
        _check(c)
        return c

    def run_settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RUN_FIELDS}

    def resumed_from(self, saved: dict[str, Any], source: Path) -> TrainConfig:
        """The settings of this ``--resume`` session of the run saved as ``saved``: the ``config`` of the
        checkpoint ``source`` (``OUT/checkpoint.pt``).

        The run's settings come from ``saved``; giving a different value for one of them (or another model) is
        refused with a :class:`CheckpointError` that names ``source``. Session settings come from ``self``.
        """
        run = TrainConfig(**{**asdict(TrainConfig()), **saved})
        if self.model is not None and self.model != run.model:
            raise CheckpointError(
                f"{source} is a checkpoint of model {run.model!r}, not {self.model!r}; "
                f"choose another --out or drop --model"
            )
        given = {k: getattr(self, k) for k in RUN_FIELDS if getattr(self, k) not in (None, {}, [])}
        clash = {k: (v, getattr(run, k)) for k, v in given.items() if k != "model" and v != getattr(run, k)}
        if clash:
            desc = ", ".join(f"--{k.replace('_', '-')} {a} (checkpoint: {b})" for k, (a, b) in clash.items())
            raise CheckpointError(f"--resume: {desc} differ from the run saved in {source}; drop them to resume it")
        session = {k: getattr(self, k) for k in SESSION_FIELDS}
        for k in REPORT_FIELDS:
            session[k] = getattr(self, k) if getattr(self, k) is not None else getattr(run, k)
        return dataclasses.replace(
            run, **session, resume=True, out=str(source.parent), data_root=self.data_root or run.data_root
        )


def _check(c: TrainConfig) -> None:
    if c.optimizer not in ("adam", "sgd"):
        raise E4NetError(f"--optimizer must be adam or sgd, got {c.optimizer!r}")
    for name in ("epochs", "batch_size", "eval_every"):
        if getattr(c, name) < 1:
            raise E4NetError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(c, name)}")
    if not (c.lr > 0 and math.isfinite(c.lr)):
        raise E4NetError(f"--lr must be a positive number, got {c.lr}")
    for name in ("limit_train_batches", "limit_test_batches", "max_steps"):
        v = getattr(c, name)
        if v is not None and v < 1:
            raise E4NetError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    if c.amp not in ("auto", "on", "off"):
        raise E4NetError(f"--amp must be auto, on or off, got {c.amp!r}")
