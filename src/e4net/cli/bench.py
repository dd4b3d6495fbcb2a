"""``e4net bench``: wall-clock benchmark of the E4 layer and of train steps (see :mod:`e4net.analysis.bench`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="time E4 layers and train steps against the unfold reference and GroupConv (same run)",
        description=(
            "Time the E4 layer (Eq. 12) with the unfold 'reference' backend and the fast backend(s), next to a "
            "GroupConv (Eq. 5) of the same width with k=3 and with the same k, and whole train steps; prints "
            "medians of several repeats, peak memory and ratios measured in the same run, as markdown tables."
        ),
    )
    p.add_argument("--device", default="cpu", help="torch device to run on: cpu or cuda[:N] (default: %(default)s)")
    p.add_argument(
        "--suites", type=_csv, default="layers,train", help="comma list of suites: layers, train (default: %(default)s)"
    )
    p.add_argument(
        "--layer-sets", type=_csv, default="e4net,resnet",
        help="comma list of layer shapes for the layers suite: e4net (28/14/7 px) and resnet (E4R18, 32-4 px, p4 and p4m) "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--models",
        type=_csv,
        default="e4net,p4m-e4r18",
        help="comma list of registered models for the train suite (default: %(default)s)",
    )
    p.add_argument(
        "--backends", type=_csv, default="reference,auto",
        help="comma list of aggregation backends to compare; 'reference' is the baseline of the ratios, "
        "'auto' is what E4Conv picks on the device (numba on CPU, triton on CUDA) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=128, help="batch size of the layers suite (default: %(default)s)")
    p.add_argument(
        "--train-batch-size", type=int, default=None, help="batch size of the train suite (default: --batch-size)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs per measurement (after one warm-up); the median is reported (default: %(default)s)",
    )
    p.add_argument(
        "--bandwidth", type=float, default=None,
        help="device memory bandwidth in GB/s for the aggregation's bandwidth bound "
        "(default: looked up from the GPU name, e.g. 4800 for an H200; none on CPU)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch (and numba) CPU threads (default: torch's default)")
    p.add_argument(
        "--json", type=Path, default=None, help="also write the full results (machine, config, rows) to this JSON file"
    )
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown tables to this file")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.bench import run_benchmarks, to_markdown

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    for path in (args.json, args.markdown):
        if path is not None and not path.parent.exists():
            raise FileNotFoundError(f"output directory {path.parent} does not exist")
    result = run_benchmarks(
        suites=args.suites,
        device=args.device,
        backends=args.backends,
        layer_sets=args.layer_sets,
        models=args.models,
        batch_size=args.batch_size,
        train_batch_size=args.train_batch_size,
        repeats=args.repeats,
        progress=not args.no_progress,
        bandwidth_gbs=args.bandwidth,
    )
    text = to_markdown(result)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")
    return 0
