"""``e4net bench``: the benchmark suites of :mod:`e4net.analysis.bench` from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..analysis.bench import INSTANCE_LAYERS, LAYER_SETS, SUITES, BenchConfig, render, run_benchmarks, to_markdown
from ..analysis.bench.table import STYLES
from ..backends import available_backends

_DEFAULT = BenchConfig()
VOLUME_OPTIONS = (
    "volume_group", "volume_fields", "volume_kernel_size", "volume_size", "volume_batch_size", "volume_models",
    "volume_train_batch_size",
)  # fmt: skip


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def _joined(values: tuple) -> str:
    return ",".join(str(v) for v in values)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="time E4 layers, train steps, the Eq. 9 instances and E4 models against baselines measured in the same run",
        description=(
            "Time the E4 layer (Eq. 12) with the unfold 'reference' backend and the fast backend(s), next to a "
            "GroupConv (Eq. 5) of the same width with k=3 and with the same k (layers), whole train steps (train), "
            "the layers that are instances of Eq. 9 side by side (instances), and each E4 model against its G-CNN "
            "twin, train and inference (models); prints medians of several "
            "repeats, peak memory and ratios against a baseline measured in the same run, as tables."
        ),
    )
    p.add_argument(
        "--device", default=_DEFAULT.device, help="torch device to run on: cpu or cuda[:N] (default: %(default)s)"
    )
    p.add_argument(
        "--suites", type=_csv, default=_joined(_DEFAULT.suites),
        help=f"comma list of suites to run: {', '.join(SUITES)} (see --list-suites) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--list-suites", action="store_true", help="print the suites with what each measures, and exit")
    p.add_argument(
        "--backends", type=_csv, default=_joined(_DEFAULT.backends),
        help=f"comma list of aggregation backends to compare, from {', '.join(available_backends())}; 'reference' "
        "is the baseline of the ratios, 'auto' is what E4Conv picks on the device (numba on CPU, triton on CUDA) "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--batch-size",
        type=int,
        default=_DEFAULT.batch_size,
        help="batch size of the layers suite (default: %(default)s)",
    )
    p.add_argument(
        "--repeats", type=int, default=_DEFAULT.repeats,
        help="timed runs per measurement (after one warm-up); the median is reported (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch (and numba) CPU threads (default: torch's default)")
    layers = p.add_argument_group("layers suite")
    layers.add_argument(
        "--layer-sets", type=_csv, default=_joined(_DEFAULT.layer_sets),
        help=f"comma list of layer shapes, from {', '.join(LAYER_SETS)}: e4net (28/14/7 px) and resnet (E4R18, "
        "32-4 px, p4 and p4m) (default: %(default)s)",
    )  # fmt: skip
    layers.add_argument(
        "--bandwidth", type=float, default=_DEFAULT.bandwidth_gbs,
        help="device memory bandwidth in GB/s for the aggregation's bandwidth bound "
        "(default: looked up from the GPU name, e.g. 4800 for an H200; none on CPU)",
    )  # fmt: skip
    train = p.add_argument_group("train suite")
    train.add_argument(
        "--models", type=_csv, default=_joined(_DEFAULT.models),
        help="comma list of registered models (see `e4net models`) (default: %(default)s)",
    )  # fmt: skip
    train.add_argument(
        "--train-batch-size", type=int, default=_DEFAULT.train_batch_size,
        help="batch size of the train suite (default: --batch-size)",
    )  # fmt: skip
    inst = p.add_argument_group("instances suite (GroupConv, E4Conv, self-attention, attentive conv as Eq. 9)")
    inst.add_argument(
        "--instance-layers", type=_csv, default=_joined(_DEFAULT.instance_layers),
        help=f"comma list of layers, from {', '.join(INSTANCE_LAYERS)}; GroupConv is the baseline of the ratios "
        "(default: %(default)s)",
    )  # fmt: skip
    inst.add_argument(
        "--instance-kernel-sizes", type=_csv_ints, default=_joined(_DEFAULT.instance_kernel_sizes),
        help="comma list of odd spatial kernel sizes k (default: %(default)s)",
    )  # fmt: skip
    inst.add_argument(
        "--instance-channels", type=int, default=_DEFAULT.instance_channels,
        help="input = output fields C (default: %(default)s)",
    )  # fmt: skip
    inst.add_argument(
        "--instance-size", type=int, default=_DEFAULT.instance_size,
        help="spatial size H = W of the input (default: %(default)s)",
    )  # fmt: skip
    inst.add_argument(
        "--instance-batch-size", type=int, default=_DEFAULT.instance_batch_size,
        help="batch size (default: %(default)s)",
    )  # fmt: skip
    inst.add_argument(
        "--instance-group", choices=["p4", "p4m"], default=_DEFAULT.instance_group,
        help="the group (default: %(default)s)",
    )  # fmt: skip
    pairs = p.add_argument_group("models suite (each E4 model against its G-CNN twin)")
    pairs.add_argument(
        "--model-pairs", type=_csv, default=_joined(_DEFAULT.model_pairs),
        help="comma list of E4:TWIN@BATCH (registered model names; the twin is the baseline) (default: %(default)s)",
    )  # fmt: skip
    pairs.add_argument(
        "--authors-code", default=None, metavar="DIR",
        help="a checkout of the authors' code (LingshenHe/Efficient-Equivariant-Network) for a row of their E4-Net "
        "beside ours; without it that row is left out",
    )  # fmt: skip
    inf = p.add_argument_group("inference suite (CPU: e4net eval, exported PyTorch, onnxruntime)")
    inf.add_argument(
        "--inference-models", type=_csv, default=_joined(_DEFAULT.inference_models),
        help="comma list of registered models; p4cnn in e4net eval mode is always measured as the baseline "
        "(default: %(default)s)",
    )  # fmt: skip
    inf.add_argument(
        "--inference-batch-sizes", type=_csv_ints, default=_joined(_DEFAULT.inference_batch_sizes),
        help="comma list of batch sizes (default: %(default)s)",
    )  # fmt: skip
    inf.add_argument(
        "--inference-runtimes", type=_csv, default=_joined(_DEFAULT.inference_runtimes),
        help="comma list from eval, exported, onnxruntime (needs the export extra) (default: %(default)s)",
    )  # fmt: skip
    vol = p.add_argument_group("volumes suite (3-D: O / Oh voxel grids, docs/3d.md)")
    vol.add_argument(
        "--volume-group", choices=["O", "Oh"], default=_DEFAULT.volume_group, help="the group (default: %(default)s)"
    )
    vol.add_argument(
        "--volume-fields", type=int, default=_DEFAULT.volume_fields, help="fields C of the layer (default: %(default)s)"
    )
    vol.add_argument(
        "--volume-kernel-size",
        type=int,
        default=_DEFAULT.volume_kernel_size,
        help="odd kernel side k (default: %(default)s)",
    )
    vol.add_argument(
        "--volume-size", type=int, default=_DEFAULT.volume_size, help="side S of the S^3 input (default: %(default)s)"
    )
    vol.add_argument(
        "--volume-batch-size",
        type=int,
        default=_DEFAULT.volume_batch_size,
        help="layer batch size (default: %(default)s)",
    )
    vol.add_argument(
        "--volume-models", type=_csv, default=_joined(_DEFAULT.volume_models),
        help="comma list of 3-D models whose train steps are timed; the last is the baseline (default: %(default)s)",
    )  # fmt: skip
    vol.add_argument(
        "--volume-train-batch-size",
        type=int,
        default=_DEFAULT.volume_train_batch_size,
        help="train-step batch size (default: %(default)s)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--format", choices=STYLES, default="markdown",
        help="how the tables are printed: markdown or aligned plain text (default: %(default)s)",
    )  # fmt: skip
    out.add_argument(
        "--json", type=Path, default=None, help="also write the full results (machine, config, rows) to this JSON file"
    )
    out.add_argument("--markdown", type=Path, default=None, help="also write the markdown tables to this file")
    out.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    if args.list_suites:
        for name, suite in SUITES.items():
            print(f"{name}: {suite.summary}")
        return 0
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    for path in (args.json, args.markdown):
        if path is not None and not path.parent.exists():
            raise FileNotFoundError(f"output directory {path.parent} does not exist")
    config = BenchConfig(
        suites=args.suites,
        device=args.device,
        backends=args.backends,
        batch_size=args.batch_size,
        repeats=args.repeats,
        layer_sets=args.layer_sets,
        bandwidth_gbs=args.bandwidth,
        models=args.models,
        train_batch_size=args.train_batch_size,
        instance_layers=args.instance_layers,
        instance_kernel_sizes=args.instance_kernel_sizes,
        instance_channels=args.instance_channels,
        instance_size=args.instance_size,
        instance_batch_size=args.instance_batch_size,
        instance_group=args.instance_group,
        model_pairs=args.model_pairs,
        authors_code=args.authors_code,
        inference_models=args.inference_models,
        inference_batch_sizes=args.inference_batch_sizes,
        inference_runtimes=args.inference_runtimes,
        **{f: getattr(args, f) for f in VOLUME_OPTIONS},
    )
    result = run_benchmarks(config, progress=not args.no_progress)
    print(render(result, args.format))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(to_markdown(result) + "\n")
    return 0
