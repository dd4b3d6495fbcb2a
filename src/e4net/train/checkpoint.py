"""Checkpoints: written atomically (temporary file in the same folder, fsync, ``os.replace``), so a crash or a
full disk never leaves a half-written file under the final name and the previous checkpoint survives.

A checkpoint is a dict with ``format`` (:data:`FORMAT`), ``model`` (registry name), ``model_args``,
``num_classes``, ``dataset``, ``config`` (the run's settings), ``model_state``, ``optimizer_state``,
``epoch`` (completed epochs), ``step`` (global optimizer steps), ``rng`` states and the in-progress epoch's
running sums, everything needed to continue bit for bit.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import E4NetError
from ..io import atomic_write_bytes

FORMAT = "e4net-checkpoint-v1"


class CheckpointError(E4NetError):
    """A checkpoint is missing, unreadable or does not fit the model / run."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    data = buf.getvalue()
    atomic_write_bytes(Path(path), lambda f: f.write(data))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means a corrupt / foreign file
        raise CheckpointError(f"{path} is not a readable e4net checkpoint (corrupt or truncated: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an e4net checkpoint (expected format {FORMAT!r})")
    return ckpt


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` (the model's initialisation)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    """``load_state_dict`` that reports a mismatch as one clear :class:`CheckpointError`."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(f"{source} does not fit model {model_name!r}: {first}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit model {model_name!r}: "
            + (f"missing {len(missing)} tensors (e.g. {missing[0]})" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})" if unexpected else "")
        )
