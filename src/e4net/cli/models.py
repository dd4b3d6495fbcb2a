"""``e4net models``: parameters and MACs of the registered models against the paper's Tables 1-4."""

from __future__ import annotations

import argparse
import json
import sys

from ..models import INPUT_SHAPES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "models",
        help="list the registered models with their params / MACs against the paper's tables",
        description=(
            "Build every registered model (and the Table 2/3 ablations of e4net), count its parameters and "
            "multiply-accumulates for one input of its data set's size (e4net.count, computed now), and compare "
            "them with the paper's Tables 1-4. Rows more than 5%% off are flagged with '!' and explained below "
            "the table."
        ),
    )
    p.add_argument(
        "--dataset",
        choices=sorted(INPUT_SHAPES),
        default=None,
        help="only the models trained on this data set (mnist-rot: Tables 1-3, cifar10: Table 4); default: all",
    )
    p.add_argument("--name", default=None, help="only this registered model (for e4net: with its ablations)")
    p.add_argument("--no-ablations", action="store_true", help="leave out the Table 2/3 ablation rows of e4net")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object per row instead of the table")
    out.add_argument(
        "--markdown",
        action="store_true",
        help="print the table as markdown, with the paper's test errors (the table of docs/models.md)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..analysis.paper_table import format_markdown, format_table, model_table

    rows = model_table(
        dataset=args.dataset, name=args.name, include_ablations=not args.no_ablations, progress=sys.stderr.isatty()
    )
    if not rows:
        print(f"no registered model for data set {args.dataset!r}")
        return 0
    if args.json:
        for r in rows:
            print(json.dumps(r.as_dict()))
    elif args.markdown:
        print(format_markdown(rows))
    else:
        print(format_table(rows))
    return 0
