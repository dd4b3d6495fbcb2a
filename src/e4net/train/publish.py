"""Turning a finished run of ``e4net train`` into shipped weights (:mod:`e4net.models.pretrained`).

:func:`publish_weights` reads the run folder (checkpoint, ``summary.json``), refuses a run that has not finished its
epochs, hashes the data set file it was trained on, and writes ``NAME.safetensors`` and ``NAME.json`` (the record:
command, data SHA-256, seed, epochs, final-epoch test error, normalisation, machine, commit).
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import torch

from ..data import data_file, file_digest
from ..errors import E4NetError
from ..models.pretrained import WEIGHTS_DIR, PretrainedRecord, save_pretrained
from .load import checkpoint_file, load_trained
from .outputs import SUMMARY


def _commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def publish_weights(
    run: str | Path, command: str, out_dir: str | Path = WEIGHTS_DIR, notes: str = ""
) -> PretrainedRecord:
    """Write the weights of the finished run folder ``run`` and their record into ``out_dir`` (the package's weights
    folder by default); ``command`` is the exact training command, recorded as given. Returns the record."""
    run = Path(run)
    summary_path = run / SUMMARY
    if not summary_path.is_file():
        raise E4NetError(f"{run}: no {SUMMARY}; only a finished run can be published")
    summary = json.loads(summary_path.read_text())
    trained = load_trained(checkpoint_file(run))
    cfg = trained.config
    if summary.get("status") != "completed" or trained.epoch != cfg.get("epochs") or summary.get("test_error") is None:
        raise E4NetError(f"{run}: the run stopped at epoch {trained.epoch} of {cfg.get('epochs')}; finish it first")
    data_name = data_file(trained.dataset)  # the digits are embedded: no file
    digest = ""
    if data_name is not None:
        path = Path(cfg.get("data_root") or ".") / data_name
        if not path.is_file():
            raise E4NetError(f"{path}: the data set file of this run is needed for its SHA-256")
        digest = file_digest(path, "sha256")
    norm = trained.normalisation
    record = PretrainedRecord(
        model=trained.name,
        dataset=trained.dataset,
        num_classes=trained.num_classes,
        model_args=trained.model_args,
        normalisation={"scale": norm.scale, "mean": norm.mean, "std": norm.std}
        if norm
        else {"scale": 1.0, "mean": None, "std": None},  # fmt: skip
        command=command,
        data_file=data_name or "",
        data_sha256=digest,
        seed=int(cfg.get("seed", 0)),
        epochs=int(trained.epoch),
        test_error=float(summary["test_error"]),
        test_images=int(summary.get("test_images_evaluated") or summary.get("test_size") or 0),
        train_seconds=float(summary.get("seconds", 0.0)),
        machine=_machine(),
        e4net_commit=_commit(),
        notes=notes,
    )
    save_pretrained(trained.model, record, out_dir)
    return record
