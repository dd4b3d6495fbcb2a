"""The training loop behind ``e4net train``: the paper's recipes, in-memory data, JSON-lines metrics, atomic
per-epoch checkpoints, exact resume, NaN detection, mixed precision on CUDA, DistributedDataParallel.

:func:`train` takes a :class:`TrainConfig` (``None`` fields fall back on the data set's recipe,
:mod:`e4net.train.recipes`) and returns the summary it writes to ``OUT/summary.json``. The reported test error
is always the final epoch's; the optional validation split (``val_size``) is reported beside it, never used to
pick an epoch by its test error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DataSet, load_dataset
from ..data.loader import BatchLoader
from ..errors import E4NetError
from ..io import atomic_write_bytes
from . import distributed as D
from .checkpoint import CheckpointError, load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from .recipes import Recipe, lr_at, recipe_for

DEFAULT_MODEL = {"digits": "e4net", "mnist-rot": "e4net", "cifar10": "p4-e4r18", "cifar100": "p4-e4r18"}
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"

# Settings that define the run (and must match on --resume); the others may change between sessions.
RUN_FIELDS = (
    "model", "dataset", "epochs", "batch_size", "lr", "weight_decay", "optimizer", "momentum", "nesterov",
    "milestones", "gamma", "seed", "train_per_class", "val_size", "model_args", "limit_train_batches",
)  # fmt: skip


class TrainingDiverged(E4NetError):
    """The loss became NaN or infinite."""


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
        _check_config(c)
        return c

    def run_settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RUN_FIELDS}


def _check_config(c: TrainConfig) -> None:
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


# ---- helpers ---------------------------------------------------------------------------------------------


def _finite(obj: Any) -> Any:
    """Non-finite floats -> None, so that the files stay valid JSON (``NaN`` is not JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(_finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def _append_jsonl(path: Path, obj: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(_finite(obj), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_metrics(path: Path, epochs_done: int) -> None:
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


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_model(
    name: str, num_classes: int, model_args: dict[str, Any], input_shape: tuple[int, ...]
) -> torch.nn.Module:
    from ..models import create_model, model_spec

    spec = model_spec(name)
    if tuple(spec.input_shape) != tuple(input_shape):
        raise E4NetError(
            f"model {name!r} is built for {spec.dataset} inputs {tuple(spec.input_shape)}, but this data set gives "
            f"{tuple(input_shape)}; choose a model for it (e4net models lists them)"
        )
    return create_model(name, num_classes=num_classes, **model_args)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: DataSet,
    split,
    *,
    batch_size: int,
    device: torch.device,
    ctx: D.DistContext | None = None,
    limit: int | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy and error (percent) on ``split`` (sharded over the ranks of a distributed run)."""
    ctx = ctx or D.DistContext(device=device)
    was = model.training
    model.eval()
    loader = BatchLoader(
        split, batch_size, shuffle=False, prepare=data.prepare, rank=ctx.rank, world_size=ctx.world_size, limit=limit
    )
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    for x, y in loader.batches(0):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        out = out.float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").double()
        wrong += (out.argmax(1) != y).sum().double()
        seen += len(y)
    model.train(was)
    loss_total, wrong_total, n = D.all_reduce_sum([loss_sum.item(), wrong.item(), float(seen)], ctx)
    n = max(n, 1.0)
    return {"loss": loss_total / n, "error": 100.0 * wrong_total / n, "n": int(n)}


class _Running:
    """Running sums of an epoch; per-step losses are checked for NaN / inf when flushed (one sync per flush)."""

    def __init__(self, loss_sum: float, correct: float, seen: int, step: int):
        self.loss_sum, self.correct, self.seen = loss_sum, correct, seen
        self.pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        self.first_step = step  # global step count before the first pending step

    def flush(self, step: int, spe: int, ckpt_path: Path, last_ckpt_step: int | None) -> None:
        if not self.pending:
            return
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


# ---- the loop --------------------------------------------------------------------------------------------


def train(config: TrainConfig, log=None) -> dict[str, Any]:
    """Run (or resume) one training run; returns the summary (also written to ``OUT/summary.json``).

    Raises :class:`TrainingDiverged` on a NaN/inf loss (the last checkpoint is kept), :class:`E4NetError` on bad
    input. A run stopped by ``max_steps`` saves a checkpoint at that step and returns ``{"status": "paused"}``.
    """
    ctx = D.setup(config.device)
    try:
        return _train(config, ctx, log or (lambda msg: print(msg, file=sys.stderr)))
    finally:
        D.teardown(ctx)


def _train(config: TrainConfig, ctx: D.DistContext, log) -> dict[str, Any]:
    if not ctx.is_main:
        log = lambda msg: None  # noqa: E731
    out = Path(config.out or ".")
    ckpt_path = out / CHECKPOINT
    ckpt = None
    if config.resume:
        c0 = config.resolved()
        out = Path(c0.out)
        ckpt_path = out / CHECKPOINT
        ckpt = load_checkpoint(ckpt_path)
        saved = TrainConfig(**{**asdict(TrainConfig()), **ckpt["config"]})
        if config.model is not None and config.model != saved.model:
            raise CheckpointError(
                f"{ckpt_path} is a checkpoint of model {saved.model!r}, not {config.model!r}; "
                f"choose another --out or drop --model"
            )
        given = {k: getattr(config, k) for k in RUN_FIELDS if getattr(config, k) not in (None, {}, [])}
        clash = {k: (v, getattr(saved, k)) for k, v in given.items() if k != "model" and v != getattr(saved, k)}
        if clash:
            desc = ", ".join(f"--{k.replace('_', '-')} {a} (checkpoint: {b})" for k, (a, b) in clash.items())
            raise CheckpointError(f"--resume: {desc} differ from the run saved in {ckpt_path}; drop them to resume it")
        runtime_keys = ("device", "amp", "channels_last", "verify", "checksum", "download", "max_steps", "progress")
        runtime = {k: getattr(config, k) for k in runtime_keys}
        # Settings that only shape the report carry over from the saved run unless given again.
        for k in ("limit_test_batches", "eval_every"):
            runtime[k] = getattr(config, k) if getattr(config, k) is not None else getattr(saved, k)
        cfg = dataclasses.replace(saved, **runtime, resume=True, out=str(out),
                                  data_root=config.data_root or saved.data_root)  # fmt: skip
    else:
        cfg = config.resolved()
        out = Path(cfg.out)
        ckpt_path = out / CHECKPOINT
        if ctx.is_main and ckpt_path.exists():
            raise E4NetError(
                f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue it, or choose another --out"
            )
    device = ctx.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    amp = device.type == "cuda" and cfg.amp in ("auto", "on")
    if cfg.amp == "on" and device.type != "cuda":
        log("note: --amp on has no effect on CPU (mixed precision is used on CUDA only)")

    def load() -> DataSet:
        return load_dataset(
            cfg.dataset, cfg.data_root, download=cfg.download and ctx.is_main, verify=cfg.verify,
            checksum=cfg.checksum, train_per_class=cfg.train_per_class, seed=cfg.seed, val_size=cfg.val_size,
        )  # fmt: skip

    if ctx.distributed:  # rank 0 downloads / builds the cache first, the others then read it
        data = load() if ctx.is_main else None
        D.barrier(ctx)
        data = data if data is not None else load()
    else:
        data = load()
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.num_classes, cfg.model_args, data.input_shape)
    from ..analysis import count

    counts = count(model, data.input_shape)
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )

    train_split = data.train.to(device)
    loader = BatchLoader(
        train_split, cfg.batch_size, shuffle=True, seed=cfg.seed, prepare=data.prepare, rank=ctx.rank,
        world_size=ctx.world_size, limit=cfg.limit_train_batches,
    )  # fmt: skip
    test_split = data.test.to(device)
    val_split = data.val.to(device) if data.val is not None else None
    spe = len(loader)
    milestone_steps = [round(m * spe) for m in cfg.milestones]

    epoch, step, seconds, partial = 0, 0, 0.0, None
    last_eval: dict[str, Any] = {}
    if ckpt is not None:
        load_model_state(model, ckpt["model_state"], str(ckpt_path), cfg.model)
        try:
            opt.load_state_dict(ckpt["optimizer_state"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{ckpt_path}: optimizer state does not fit ({exc})") from None
        epoch, step, seconds = ckpt["epoch"], ckpt["step"], ckpt.get("seconds", 0.0)
        partial, last_eval = ckpt.get("partial"), ckpt.get("last_eval", {})
        set_rng_state(ckpt["rng"])
        if ctx.is_main:
            _truncate_metrics(out / METRICS, epoch)
        log(f"resuming {ckpt_path} at epoch {epoch} step {step}")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    net = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    log(
        f"{cfg.model} on {cfg.dataset}: {counts.params:,} params, {counts.macs / 1e6:.2f}M MACs; "
        f"{len(data.train)} train / {len(data.test)} test images; {cfg.epochs} epochs x {spe} steps; "
        f"{cfg.optimizer} lr {cfg.lr:g} (x{cfg.gamma:g} at epochs {', '.join(f'{m:g}' for m in cfg.milestones)}); "
        f"device {device}{' x' + str(ctx.world_size) if ctx.distributed else ''}"
    )

    def checkpoint_state(partial_state: dict | None) -> dict[str, Any]:
        return {
            "model": cfg.model, "model_args": cfg.model_args, "num_classes": data.num_classes,
            "dataset": cfg.dataset, "input_shape": list(data.input_shape), "config": asdict(cfg),
            "model_state": model.state_dict(), "optimizer_state": opt.state_dict(), "epoch": epoch, "step": step,
            "seconds": seconds, "rng": rng_state(), "partial": partial_state, "last_eval": last_eval,
            "params": counts.params, "macs": counts.macs, "normalisation": {"scale": data.scale, "mean": data.mean,
                                                                             "std": data.std},
        }  # fmt: skip

    sync_every = 1 if device.type == "cpu" else 25
    last_ckpt_step = step if ckpt is not None else None
    status = "completed"
    while epoch < cfg.epochs:
        if cfg.max_steps is not None and step >= cfg.max_steps:
            if last_ckpt_step != step and ctx.is_main:
                save_checkpoint(ckpt_path, checkpoint_state(partial))
            log(f"stopped at step {step} (--max-steps); continue with: e4net train --out {out} --resume")
            status = "paused"
            break
        start = step - epoch * spe
        p = partial if partial and start > 0 else {}
        loss_sum, correct, seen = p.get("loss_sum", 0.0), p.get("correct", 0.0), p.get("seen", 0)
        ep_seconds, ep_data = p.get("seconds", 0.0), p.get("data_seconds", 0.0)
        partial = None
        loader.data_seconds = 0.0
        t_start = time.perf_counter()
        bar = None
        if cfg.progress and ctx.is_main:
            from tqdm import tqdm

            bar = tqdm(
                total=spe, initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True
            )
        acc = _Running(loss_sum, correct, seen, step)
        stop = False

        for x, y in loader.batches(epoch, start):
            lr = lr_at(step, cfg.lr, milestone_steps, cfg.gamma)
            for g in opt.param_groups:
                g["lr"] = lr
            if cfg.channels_last and device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc.pending.append((loss.detach(), (logits.detach().argmax(1) == y).sum(), len(y)))
            step += 1
            if len(acc.pending) >= sync_every or step - epoch * spe == spe:
                acc.flush(step, spe, ckpt_path, last_ckpt_step)
                if bar is not None:
                    el = ep_seconds + time.perf_counter() - t_start
                    bar.set_postfix(loss=f"{acc.loss_sum / max(acc.seen, 1):.4f}",
                                    acc=f"{100 * acc.correct / max(acc.seen, 1):.2f}%",
                                    img_s=f"{acc.seen * ctx.world_size / max(el, 1e-9):.0f}", refresh=False)  # fmt: skip
            if bar is not None:
                bar.update(1)
            if cfg.max_steps is not None and step >= cfg.max_steps and step - epoch * spe < spe:
                stop = True
                break
        acc.flush(step, spe, ckpt_path, last_ckpt_step)
        if bar is not None:
            bar.close()
        loss_sum, correct, seen = acc.loss_sum, acc.correct, acc.seen
        elapsed = time.perf_counter() - t_start
        ep_seconds += elapsed
        ep_data += loader.data_seconds
        seconds += elapsed
        if stop:
            partial = {"loss_sum": loss_sum, "correct": correct, "seen": seen, "seconds": ep_seconds,
                       "data_seconds": ep_data}  # fmt: skip
            if ctx.is_main:
                save_checkpoint(ckpt_path, checkpoint_state(partial))
            last_ckpt_step = step
            log(f"stopped at step {step} (--max-steps); continue with: e4net train --out {out} --resume")
            status = "paused"
            break
        epoch += 1
        tr_loss, tr_correct, tr_seen = D.all_reduce_sum([loss_sum, correct, float(seen)], ctx)
        line: dict[str, Any] = {
            "epoch": epoch, "step": step, "lr": lr_at(step - 1, cfg.lr, milestone_steps, cfg.gamma),
            "train_loss": tr_loss / max(tr_seen, 1), "train_error": 100.0 * (1 - tr_correct / max(tr_seen, 1)),
        }  # fmt: skip
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            t_eval = time.perf_counter()
            ev_kw = dict(batch_size=max(cfg.batch_size, 256), device=device, ctx=ctx, limit=cfg.limit_test_batches,
                         amp=amp, channels_last=cfg.channels_last and device.type == "cuda")  # fmt: skip
            te = evaluate(model, data, test_split, **ev_kw)
            line.update(test_loss=te["loss"], test_error=te["error"])
            if val_split is not None:
                va = evaluate(model, data, val_split, **ev_kw)
                line.update(val_loss=va["loss"], val_error=va["error"])
            line["eval_seconds"] = time.perf_counter() - t_eval
            if not math.isfinite(te["loss"]):
                log(f"warning: the test loss is not finite at epoch {epoch} (eval mode: BatchNorm running statistics?)")
            last_eval = {k: v for k, v in line.items() if k.startswith(("test_", "val_"))}
            last_eval["epoch"] = epoch
        line.update(
            epoch_seconds=ep_seconds, images_per_s=tr_seen / max(ep_seconds, 1e-9),
            data_wait_frac=ep_data / max(ep_seconds, 1e-9), data_wait_seconds=ep_data,
        )  # fmt: skip
        if ctx.is_main:
            _append_jsonl(out / METRICS, line)
            save_checkpoint(ckpt_path, checkpoint_state(None))
        last_ckpt_step = step
        msg = f"epoch {epoch}/{cfg.epochs}: train loss {line['train_loss']:.4f} err {line['train_error']:.2f}%"
        if "test_error" in line:
            msg += f", test err {line['test_error']:.2f}%"
        if "val_error" in line:
            msg += f", val err {line['val_error']:.2f}%"
        log(
            msg
            + f" ({ep_seconds:.1f}s, {line['images_per_s']:.0f} img/s, data wait {100 * line['data_wait_frac']:.1f}%)"
        )

    if status == "paused":
        return {"status": "paused", "step": step, "epoch": epoch, "out": str(out)}
    summary = {
        "status": status,
        "model": cfg.model, "model_args": cfg.model_args, "dataset": cfg.dataset, "seed": cfg.seed,
        "test_error": last_eval.get("test_error"), "test_loss": last_eval.get("test_loss"),
        "val_error": last_eval.get("val_error"), "eval_epoch": last_eval.get("epoch"),
        "params": counts.params, "macs": counts.macs, "epochs": cfg.epochs, "steps": step, "seconds": seconds,
        "train_size": len(data.train), "test_size": len(data.test),
        "test_images_evaluated": None, "world_size": ctx.world_size, "device": str(device), "amp": amp,
        "config": asdict(cfg), "torch": torch.__version__,
    }  # fmt: skip
    if cfg.limit_test_batches:
        summary["test_images_evaluated"] = min(len(data.test), cfg.limit_test_batches * max(cfg.batch_size, 256))
    else:
        summary["test_images_evaluated"] = len(data.test)
    if ctx.is_main:
        _write_json(out / SUMMARY, summary)
        log(
            f"final test error {summary['test_error']:.2f}% after {cfg.epochs} epochs ({seconds:.0f}s); wrote {out / SUMMARY}"
        )
    return summary
