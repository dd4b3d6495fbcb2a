"""The bookkeeping of one training epoch: its running sums, checked for NaN / inf losses, its progress bar and
the line printed after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import E4NetError


class TrainingDiverged(E4NetError):
    """The loss became NaN or infinite."""


class EpochSums:
    """Running sums of an epoch (loss, correct predictions, images, seconds, seconds of data wait).

    The per-step losses stay on the device in ``pending`` and are added (and checked for NaN / inf) by
    :meth:`flush`, one device synchronisation per flush. ``first_step`` is the global step count before the first
    pending step. An epoch interrupted by ``--max-steps`` saves its sums in the checkpoint (:meth:`as_partial`)
    and continues from them (:meth:`resumed`), so that the epoch's metrics come out as if uninterrupted.
    """

    def __init__(self, loss_sum: float, correct: float, seen: int, step: int, seconds: float, data_seconds: float):
        self.loss_sum, self.correct, self.seen = loss_sum, correct, seen
        self.seconds, self.data_seconds = seconds, data_seconds
        self.pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        self.first_step = step
        self.seen_all_ranks = float(seen)  # set by the trainer once the epoch's sums are all-reduced

    @classmethod
    def resumed(cls, partial: dict[str, Any], step: int) -> EpochSums:
        """The sums of an epoch continued from ``partial`` (empty for an epoch that starts now) at ``step``."""
        return cls(
            partial.get("loss_sum", 0.0),
            partial.get("correct", 0.0),
            partial.get("seen", 0),
            step,
            partial.get("seconds", 0.0),
            partial.get("data_seconds", 0.0),
        )

    def as_partial(self) -> dict[str, Any]:
        """The sums as stored in a checkpoint taken mid-epoch (flush first)."""
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen, "seconds": self.seconds,
                "data_seconds": self.data_seconds}  # fmt: skip

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        """One step's mean loss and number of correct predictions over its ``n`` images (tensors, not synced)."""
        self.pending.append((loss, correct, n))

    def flush(self, step: int, steps_per_epoch: int, ckpt_path: Path, last_ckpt_step: int | None) -> None:
        """Add the pending steps (the global step count is now ``step``); :class:`TrainingDiverged` on a NaN / inf
        loss, naming its step and the last good checkpoint."""
        if not self.pending:
            return
        spe = steps_per_epoch
        losses = torch.stack([lo for lo, _, _ in self.pending])
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = self.first_step + int((~finite).nonzero()[0]) + 1
            where = f"step {bad} (epoch {(bad - 1) // spe + 1}, batch {(bad - 1) % spe + 1})"
            kept = (
                f"the last good checkpoint is {ckpt_path} (step {last_ckpt_step}), kept unchanged"
                if last_ckpt_step is not None
                else "no checkpoint had been written yet"
            )
            raise TrainingDiverged(
                f"the loss became {losses[~finite][0].item()} at {where}; training stopped, {kept}. "
                "Lower --lr or check the data."
            )
        ns = torch.tensor([n for _, _, n in self.pending], dtype=torch.float64, device=losses.device)
        self.loss_sum += float((losses.double() * ns).sum())
        self.correct += float(torch.stack([c for _, c, _ in self.pending]).sum())
        self.seen += int(ns.sum())
        self.pending = []
        self.first_step = step


def progress_bar(total: int, initial: int, desc: str):
    """A tqdm bar on stderr that disappears when the epoch ends."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def epoch_message(line: dict[str, Any], epochs: int) -> str:
    """The line printed after an epoch, from its line of metrics."""
    msg = f"epoch {line['epoch']}/{epochs}: train loss {line['train_loss']:.4f} err {line['train_error']:.2f}%"
    if "test_error" in line:
        msg += f", test err {line['test_error']:.2f}%"
    if "val_error" in line:
        msg += f", val err {line['val_error']:.2f}%"
    return msg + (
        f" ({line['epoch_seconds']:.1f}s, {line['images_per_s']:.0f} img/s, "
        f"data wait {100 * line['data_wait_frac']:.1f}%)"
    )
