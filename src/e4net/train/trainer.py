"""The training loop behind ``e4net train``, as named steps that :func:`train` calls in order:

1. :meth:`Trainer.setup` -- the run's settings (the paper's recipe, or the checkpoint's on ``--resume``), the
   data (in memory), the model, the optimiser, the batch loader;
2. :meth:`Trainer.resume` -- on ``--resume``, the checkpoint's weights, optimiser state, counters and RNG states;
3. :meth:`Trainer.start` -- the run folder, the DistributedDataParallel wrapper, the run's description;
4. per epoch: :meth:`Trainer.run_epoch` (the optimiser steps), :meth:`Trainer.evaluate` (test / validation error
   every ``--eval-every`` epochs and after the last), :meth:`Trainer.record` (a line of ``OUT/metrics.jsonl``
   and the checkpoint ``OUT/checkpoint.pt``, written atomically);
5. :meth:`Trainer.finish` -- ``OUT/summary.json``; or :meth:`Trainer.pause` when ``--max-steps`` stops the run.

The reported test error is always the final epoch's; the optional validation split (``val_size``) is reported
beside it, never used to pick an epoch by its test error. A resumed run ends bitwise equal to an uninterrupted one
(the data order of an epoch depends on ``(seed, epoch)`` alone; the sums of an interrupted epoch are saved).
A NaN / inf loss stops the run with :class:`~e4net.train.epoch.TrainingDiverged`, the last checkpoint kept.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..analysis import Count, count
from ..data import DataSet, load_dataset
from ..data.loader import BatchLoader
from ..errors import E4NetError
from ..io import append_jsonl, write_json
from . import distributed as D
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .config import TrainConfig
from .epoch import EpochSums, epoch_message, progress_bar
from .evaluation import evaluate
from .load import build_model
from .outputs import CHECKPOINT, METRICS, SUMMARY, checkpoint_state, run_summary, truncate_metrics
from .recipes import lr_at, make_optimizer

Log = Callable[[str], None]


def train(config: TrainConfig, log: Log | None = None) -> dict[str, Any]:
    """Run (or resume) one training run; returns the summary (also written to ``OUT/summary.json``).

    Raises :class:`~e4net.train.epoch.TrainingDiverged` on a NaN/inf loss (the last checkpoint is kept),
    :class:`E4NetError` on bad input. A run stopped by ``max_steps`` saves a checkpoint at that step and returns
    ``{"status": "paused", ...}``. ``log`` receives the messages (default: stderr).
    """
    ctx = D.setup(config.device)
    finished = False
    try:
        summary = _run(Trainer.setup(config, ctx, log or (lambda msg: print(msg, file=sys.stderr))))
        finished = True
        return summary
    finally:
        # On success every rank waits for the others before the process group goes: a rank that destroys its
        # gloo group while rank 0 is still writing can abort (SIGABRT in gloo's threads). After an error the
        # other ranks may never arrive, so no barrier then.
        D.teardown(ctx, synchronize=finished)


def _run(trainer: Trainer) -> dict:
    trainer.resume()
    trainer.start()
    while trainer.epoch < trainer.cfg.epochs:
        if trainer.max_steps_reached():
            return trainer.pause()
        sums = trainer.run_epoch()
        if sums is None:  # --max-steps stopped it midway
            return trainer.pause()
        line = trainer.train_metrics(sums)
        if trainer.evaluation_due():
            line.update(trainer.evaluate())
        trainer.record(line, sums)
    return trainer.finish()


class Trainer:
    """The state of one run between the steps of :func:`train`; built by :meth:`setup`."""

    def __init__(self, cfg: TrainConfig, ctx: D.DistContext, log: Log, data: DataSet, model: torch.nn.Module,
                 counts: Count, optimizer: torch.optim.Optimizer, amp: bool,
                 checkpoint: dict[str, Any] | None):  # fmt: skip
        self.cfg, self.ctx, self.log, self.data, self.amp = cfg, ctx, log, data, amp
        self.device = ctx.device
        self.out = Path(cfg.out)
        self.ckpt_path = self.out / CHECKPOINT
        self.model = self.net = model  # net: the DDP wrapper in a distributed run (see start)
        self.opt = optimizer
        self.counts = counts  # params and MACs (Sec. 4.2)
        self.saved = checkpoint  # the checkpoint of a --resume run, else None
        self.loader = BatchLoader(
            data.train.to(self.device), cfg.batch_size, shuffle=True, seed=cfg.seed, prepare=data.prepare,
            rank=ctx.rank, world_size=ctx.world_size, limit=cfg.limit_train_batches,
        )  # fmt: skip
        self.test_split = data.test.to(self.device)
        self.val_split = data.val.to(self.device) if data.val is not None else None
        self.steps_per_epoch = len(self.loader)
        self.milestone_steps = [round(m * self.steps_per_epoch) for m in cfg.milestones]
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        self.sync_every = 1 if self.device.type == "cpu" else 25  # steps between two NaN checks (device syncs)
        self.epoch, self.step, self.seconds = 0, 0, 0.0  # completed epochs, optimiser steps, training seconds
        self.partial: dict[str, Any] | None = None  # the sums of an epoch interrupted by --max-steps
        self.last_eval: dict[str, Any] = {}
        self.last_ckpt_step: int | None = None

    # ---- 1. setup -----------------------------------------------------------------------------------------------

    @classmethod
    def setup(cls, config: TrainConfig, ctx: D.DistContext, log: Log) -> Trainer:
        """Settings, data, model (seeded with the run's seed), optimiser; nothing is written yet."""
        if not ctx.is_main:
            log = lambda msg: None  # noqa: E731
        checkpoint = None
        if config.resume:
            ckpt_path = Path(config.resolved().out) / CHECKPOINT
            checkpoint = load_checkpoint(ckpt_path)
            cfg = config.resumed_from(checkpoint["config"], ckpt_path)
        else:
            cfg = config.resolved()
            if ctx.is_main and (Path(cfg.out) / CHECKPOINT).exists():
                raise E4NetError(
                    f"{Path(cfg.out)} already holds a run ({CHECKPOINT}); pass --resume to continue it, "
                    "or choose another --out"
                )
        device = ctx.device
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        amp = device.type == "cuda" and cfg.amp in ("auto", "on")
        if cfg.amp == "on" and device.type != "cuda":
            log("note: --amp on has no effect on CPU (mixed precision is used on CUDA only)")
        data = _load_data(cfg, ctx)
        seed_everything(cfg.seed)
        model = build_model(cfg.model, data.num_classes, cfg.model_args, data.input_shape)
        counts = count(model, data.input_shape)
        model.to(device)
        if cfg.channels_last and device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        opt = make_optimizer(model.parameters(), cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             momentum=cfg.momentum, nesterov=cfg.nesterov)  # fmt: skip
        return cls(cfg, ctx, log, data, model, counts, opt, amp, checkpoint)

    # ---- 2. resume ----------------------------------------------------------------------------------------------

    def resume(self) -> None:
        """Restore the checkpoint of a ``--resume`` run (nothing for a new run) and drop the metric lines of the
        epochs it had not completed."""
        ckpt = self.saved
        if ckpt is None:
            return
        load_model_state(self.model, ckpt["model_state"], str(self.ckpt_path), self.cfg.model)
        try:
            self.opt.load_state_dict(ckpt["optimizer_state"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.ckpt_path}: optimizer state does not fit ({exc})") from None
        self.epoch, self.step, self.seconds = ckpt["epoch"], ckpt["step"], ckpt.get("seconds", 0.0)
        self.partial, self.last_eval = ckpt.get("partial"), ckpt.get("last_eval", {})
        set_rng_state(ckpt["rng"])
        self.last_ckpt_step = self.step
        if self.ctx.is_main:
            truncate_metrics(self.out / METRICS, self.epoch)
        self.log(f"resuming {self.ckpt_path} at epoch {self.epoch} step {self.step}")

    # ---- 3. start -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the run folder (rank 0), wrap the model for DDP in a distributed run, describe the run."""
        cfg, ctx, data = self.cfg, self.ctx, self.data
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.log(
            f"{cfg.model} on {cfg.dataset}: {self.counts.params:,} params, {self.counts.macs / 1e6:.2f}M MACs; "
            f"{len(data.train)} train / {len(data.test)} test images; {cfg.epochs} epochs x {self.steps_per_epoch} "
            f"steps; {cfg.optimizer} lr {cfg.lr:g} (x{cfg.gamma:g} at epochs "
            f"{', '.join(f'{m:g}' for m in cfg.milestones)}); "
            f"device {self.device}{' x' + str(ctx.world_size) if ctx.distributed else ''}"
        )

    # ---- 4. the epochs ------------------------------------------------------------------------------------------

    def max_steps_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def run_epoch(self) -> EpochSums | None:
        """Train on the current epoch (its remaining batches after a mid-epoch resume) and return its sums; None
        when ``--max-steps`` stopped it midway (its sums are then kept in ``partial`` for the checkpoint)."""
        cfg, spe = self.cfg, self.steps_per_epoch
        start = self.step - self.epoch * spe
        sums = EpochSums.resumed(self.partial if self.partial and start > 0 else {}, self.step)
        self.partial = None
        self.loader.data_seconds = 0.0
        t_start = time.perf_counter()
        bar = None
        if cfg.progress and self.ctx.is_main:
            bar = progress_bar(spe, start, f"epoch {self.epoch + 1}/{cfg.epochs}")
        stopped = False
        for x, y in self.loader.batches(self.epoch, start):
            self.train_step(x, y, sums)
            if len(sums.pending) >= self.sync_every or self.step - self.epoch * spe == spe:
                sums.flush(self.step, spe, self.ckpt_path, self.last_ckpt_step)
                if bar is not None:
                    el = sums.seconds + time.perf_counter() - t_start
                    bar.set_postfix(loss=f"{sums.loss_sum / max(sums.seen, 1):.4f}",
                                    acc=f"{100 * sums.correct / max(sums.seen, 1):.2f}%",
                                    img_s=f"{sums.seen * self.ctx.world_size / max(el, 1e-9):.0f}",
                                    refresh=False)  # fmt: skip
            if bar is not None:
                bar.update(1)
            if self.max_steps_reached() and self.step - self.epoch * spe < spe:
                stopped = True
                break
        sums.flush(self.step, spe, self.ckpt_path, self.last_ckpt_step)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t_start
        sums.seconds += elapsed
        sums.data_seconds += self.loader.data_seconds
        self.seconds += elapsed
        if stopped:
            self.partial = sums.as_partial()
            return None
        self.epoch += 1
        return sums

    def train_step(self, x: torch.Tensor, y: torch.Tensor, sums: EpochSums) -> None:
        """One optimiser step on the batch ``(x, y)`` at the scheduled learning rate."""
        cfg = self.cfg
        lr = lr_at(self.step, cfg.lr, self.milestone_steps, cfg.gamma)
        for g in self.opt.param_groups:
            g["lr"] = lr
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        sums.add(loss.detach(), (logits.detach().argmax(1) == y).sum(), len(y))
        self.step += 1

    def train_metrics(self, sums: EpochSums) -> dict[str, Any]:
        """The epoch's line of metrics so far: its training loss and error, all-reduced over the ranks."""
        cfg = self.cfg
        loss, correct, seen = D.all_reduce_sum([sums.loss_sum, sums.correct, float(sums.seen)], self.ctx)
        sums.seen_all_ranks = seen
        return {
            "epoch": self.epoch, "step": self.step, "lr": lr_at(self.step - 1, cfg.lr, self.milestone_steps, cfg.gamma),
            "train_loss": loss / max(seen, 1), "train_error": 100.0 * (1 - correct / max(seen, 1)),
        }  # fmt: skip

    def evaluation_due(self) -> bool:
        return self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs

    def evaluate(self) -> dict[str, float]:
        """Test (and validation) loss and error now; remembered as the run's latest evaluation (``last_eval``)."""
        t_eval = time.perf_counter()
        kw = dict(prepare=self.data.prepare, batch_size=max(self.cfg.batch_size, 256), device=self.device,
                  ctx=self.ctx, limit=self.cfg.limit_test_batches, amp=self.amp, channels_last=self.channels_last)  # fmt: skip
        te = evaluate(self.model, self.test_split, **kw)
        result = {"test_loss": te["loss"], "test_error": te["error"]}
        if self.val_split is not None:
            va = evaluate(self.model, self.val_split, **kw)
            result.update(val_loss=va["loss"], val_error=va["error"])
        result["eval_seconds"] = time.perf_counter() - t_eval
        if not math.isfinite(te["loss"]):
            self.log(
                f"warning: the test loss is not finite at epoch {self.epoch} (eval mode: BatchNorm running statistics?)"
            )
        self.last_eval = {k: v for k, v in result.items() if k.startswith(("test_", "val_"))}
        self.last_eval["epoch"] = self.epoch
        return result

    def record(self, line: dict[str, Any], sums: EpochSums) -> None:
        """Complete the epoch's metrics with its timings, append them to ``OUT/metrics.jsonl``, save the
        checkpoint (rank 0) and print the epoch's line."""
        s = sums.seconds
        line.update(
            epoch_seconds=s, images_per_s=sums.seen_all_ranks / max(s, 1e-9),
            data_wait_frac=sums.data_seconds / max(s, 1e-9), data_wait_seconds=sums.data_seconds,
        )  # fmt: skip
        if self.ctx.is_main:
            append_jsonl(self.out / METRICS, line)
            self.write_checkpoint(None)
        self.last_ckpt_step = self.step
        self.log(epoch_message(line, self.cfg.epochs))

    # ---- 5. finish (or pause) -----------------------------------------------------------------------------------

    def pause(self) -> dict[str, Any]:
        """Stop at ``--max-steps``: checkpoint this step (with the interrupted epoch's sums) unless saved already."""
        if self.last_ckpt_step != self.step and self.ctx.is_main:
            self.write_checkpoint(self.partial)
        self.last_ckpt_step = self.step
        self.log(f"stopped at step {self.step} (--max-steps); continue with: e4net train --out {self.out} --resume")
        return {"status": "paused", "step": self.step, "epoch": self.epoch, "out": str(self.out)}

    def finish(self) -> dict[str, Any]:
        """The run's summary (the final epoch's test error), written to ``OUT/summary.json`` by rank 0."""
        summary = run_summary(self.cfg, self.data, self.counts, self.last_eval, steps=self.step, seconds=self.seconds,
                              world_size=self.ctx.world_size, device=self.device, amp=self.amp)  # fmt: skip
        if self.ctx.is_main:
            write_json(self.out / SUMMARY, summary)
            self.log(
                f"final test error {summary['test_error']:.2f}% after {self.cfg.epochs} epochs ({self.seconds:.0f}s); "
                f"wrote {self.out / SUMMARY}"
            )
        return summary

    def write_checkpoint(self, partial: dict[str, Any] | None) -> None:
        """Save ``OUT/checkpoint.pt`` atomically (``partial``: the sums of an epoch stopped midway)."""
        state = checkpoint_state(self.cfg, self.data, self.model, self.opt, self.counts, epoch=self.epoch,
                                 step=self.step, seconds=self.seconds, partial=partial, last_eval=self.last_eval)  # fmt: skip
        save_checkpoint(self.ckpt_path, state)


def _load_data(cfg: TrainConfig, ctx: D.DistContext) -> DataSet:
    def load() -> DataSet:
        return load_dataset(
            cfg.dataset, cfg.data_root, download=cfg.download and ctx.is_main, verify=cfg.verify,
            checksum=cfg.checksum, train_per_class=cfg.train_per_class, seed=cfg.seed, val_size=cfg.val_size,
        )  # fmt: skip

    if not ctx.distributed:
        return load()
    data = load() if ctx.is_main else None  # rank 0 downloads / builds the cache first, the others then read it
    D.barrier(ctx)
    return data if data is not None else load()
