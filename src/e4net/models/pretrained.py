"""Trained weights shipped inside the package: ``create_model(name, pretrained=True)``.

For each model with weights, the folder ``weights/`` beside this module holds

* ``NAME.safetensors`` -- the model's ``state_dict`` (float32, safetensors: no pickle, nothing executed on load);
* ``NAME.json`` -- its record (:class:`PretrainedRecord`): the training command, the data set file's SHA-256, the
  seed, the epochs, the final-epoch test error it reached and on how many test images, the input normalisation
  of its training run, and the machine and e4net commit it was trained with.

The record is also attached to the built model as ``model.pretrained_cfg`` (a dict), as timm does. The files are
written by :func:`e4net.train.publish.publish_weights` from a run folder of ``e4net train``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

WEIGHTS_DIR = Path(__file__).with_name("weights")
"""Where the shipped weights and their records live (package data)."""


@dataclass(frozen=True)
class PretrainedRecord:
    """What a set of shipped weights is: how it was trained, and what it reached.

    ``test_error`` is the **final-epoch** test error in percent on ``test_images`` images of ``dataset``;
    ``normalisation`` is ``{"scale", "mean", "std"}``: the model expects ``(x * scale - mean) / std`` per channel
    (``mean``/``std`` None: only the scaling) of images in the data set's stored range.
    """

    model: str
    dataset: str
    num_classes: int
    model_args: dict[str, Any]
    normalisation: dict[str, Any]
    command: str
    data_file: str
    data_sha256: str
    seed: int
    epochs: int
    test_error: float
    test_images: int
    train_seconds: float
    machine: str
    e4net_commit: str
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False) + "\n"


def available_pretrained() -> list[str]:
    """Names of the registered models that have shipped weights."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())


def pretrained_record(name: str) -> PretrainedRecord:
    """The record of model ``name``'s shipped weights (ValueError naming the models that have some otherwise)."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file() or not path.with_suffix(".safetensors").is_file():
        have = ", ".join(available_pretrained()) or "none"
        raise ValueError(f"no shipped weights for model {name!r} (pretrained=True); models with weights: {have}")
    return PretrainedRecord(**json.loads(path.read_text()))


def load_pretrained(model: nn.Module, name: str) -> nn.Module:
    """Load the shipped weights of ``name`` into ``model`` (strictly: every key, every shape) and attach the record
    as ``model.pretrained_cfg``; returns the model in eval mode."""
    from safetensors.torch import load_file

    record = pretrained_record(name)
    state = load_file(str(WEIGHTS_DIR / f"{name}.safetensors"))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"the shipped weights of {name!r} do not fit this model (were other overrides or num_classes given?): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    model.pretrained_cfg = asdict(record)
    return model.eval()


def save_pretrained(model: nn.Module, record: PretrainedRecord, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``model``'s state as ``out_dir/NAME.safetensors`` (float32 tensors, integer buffers as they are) and the
    record as ``out_dir/NAME.json``; returns both paths."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    weights, meta = out / f"{record.model}.safetensors", out / f"{record.model}.json"
    save_file(state, str(weights), metadata={"model": record.model, "dataset": record.dataset})
    meta.write_text(record.to_json())
    return weights, meta


def check_pretrained_request(name: str, num_classes: int, overrides: dict[str, Any]) -> PretrainedRecord:
    """The record for ``create_model(name, num_classes, pretrained=True, **overrides)``; a ValueError when the
    request cannot get those weights (no weights, another number of classes, architecture overrides)."""
    record = pretrained_record(name)
    if num_classes != record.num_classes:
        raise ValueError(
            f"the shipped weights of {name!r} have {record.num_classes} classes; num_classes={num_classes} needs "
            f"pretrained=False"
        )
    changed = {k: v for k, v in overrides.items() if record.model_args.get(k, v) != v or k not in record.model_args}
    if changed:
        raise ValueError(
            f"the shipped weights of {name!r} are for its registered architecture; overrides {sorted(changed)} need "
            f"pretrained=False"
        )
    return record
