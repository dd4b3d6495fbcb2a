"""``e4net publish``: a finished training run as shipped weights (``create_model(name, pretrained=True)``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "publish",
        help="write a finished run's weights and training record for create_model(name, pretrained=True)",
        description=(
            "Read the run folder of a finished `e4net train` (checkpoint.pt, summary.json), and write "
            "NAME.safetensors (the weights) and NAME.json (the record: the training command, the data file's "
            "SHA-256, seed, epochs, final-epoch test error, input normalisation, machine, commit) into --out, by "
            "default the package's weights folder."
        ),
    )
    p.add_argument("run", type=Path, help="the run folder (OUT of e4net train)")
    p.add_argument("--command", required=True, help="the exact command that trained the run, recorded as given")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: src/e4net/models/weights)")
    p.add_argument("--notes", default="", help="a free-text note kept in the record")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..models.pretrained import WEIGHTS_DIR
    from ..train.publish import publish_weights

    out = args.out or WEIGHTS_DIR
    record = publish_weights(args.run, args.command, out, notes=args.notes)
    print(f"wrote {out / (record.model + '.safetensors')} and {out / (record.model + '.json')}: {record.model} on "
          f"{record.dataset}, final-epoch test error {record.test_error:.2f}% ({record.test_images} images)")  # fmt: skip
    return 0
