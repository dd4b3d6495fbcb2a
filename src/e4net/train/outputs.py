"""The files of a run folder ``OUT`` (docs/training.md, "Outputs"): the checkpoint of the latest epoch (or of the
step ``--max-steps`` stopped at), one JSON line of metrics per epoch, and the run's summary."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..analysis import Count
from ..data import DataSet
from ..io import atomic_write_bytes
from .checkpoint import rng_state

if TYPE_CHECKING:
    from .config import TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def checkpoint_state(cfg: TrainConfig, data: DataSet, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     counts: Count, *, epoch: int, step: int, seconds: float, partial: dict[str, Any] | None,
                     last_eval: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The content of ``OUT/checkpoint.pt`` (:mod:`e4net.train.checkpoint`): everything needed to continue the
    run bit for bit, and to load the model back with its input normalisation (:func:`e4net.train.load_trained`)."""
    return {
        "model": cfg.model, "model_args": cfg.model_args, "num_classes": data.num_classes,
        "dataset": cfg.dataset, "input_shape": list(data.input_shape), "config": asdict(cfg),
        "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(), "epoch": epoch, "step": step,
        "seconds": seconds, "rng": rng_state(), "partial": partial, "last_eval": last_eval,
        "params": counts.params, "macs": counts.macs,
        "normalisation": {"scale": data.scale, "mean": data.mean, "std": data.std},
    }  # fmt: skip


def run_summary(cfg: TrainConfig, data: DataSet, counts: Count, last_eval: dict[str, Any], *, steps: int,
                seconds: float, world_size: int, device: torch.device, amp: bool) -> dict[str, Any]:  # fmt: skip
    """The content of ``OUT/summary.json``: the test error of the last evaluation (the final epoch's, never one
    chosen by its test error), params and MACs, the size of the run and its settings."""
    summary = {
        "status": "completed",
        "model": cfg.model, "model_args": cfg.model_args, "dataset": cfg.dataset, "seed": cfg.seed,
        "test_error": last_eval.get("test_error"), "test_loss": last_eval.get("test_loss"),
        "val_error": last_eval.get("val_error"), "eval_epoch": last_eval.get("epoch"),
        "params": counts.params, "macs": counts.macs, "epochs": cfg.epochs, "steps": steps, "seconds": seconds,
        "train_size": len(data.train), "test_size": len(data.test),
        "test_images_evaluated": None, "world_size": world_size, "device": str(device), "amp": amp,
        "config": asdict(cfg), "torch": torch.__version__,
    }  # fmt: skip
    if cfg.limit_test_batches:
        summary["test_images_evaluated"] = min(len(data.test), cfg.limit_test_batches * max(cfg.batch_size, 256))
    else:
        summary["test_images_evaluated"] = len(data.test)
    return summary


def truncate_metrics(path: Path, epochs_done: int) -> None:
    """On resume, keep only the metric lines of the epochs the checkpoint has completed."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("epoch", 0) <= epochs_done:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    data = "".join(k + "\n" for k in keep).encode()
    atomic_write_bytes(path, lambda f: f.write(data))
