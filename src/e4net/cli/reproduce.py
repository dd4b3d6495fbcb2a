"""``e4net reproduce {table1,table2,table3,table4,fig2}``: run the grid behind a table / figure of the paper over
several seeds and write a markdown table (test error mean ± std, params, MACs, the paper's values beside them);
for ``fig2`` also a PNG of test error against the training-set size (Sec. 5.2).

Runs live in ``OUT/runs/RUN_ID/seedS``; a finished run (its ``summary.json``) is reused and an interrupted one is
resumed, so the command can be re-run until the whole grid is done. The orchestration is
:mod:`e4net.train.reproduce`, the report :mod:`e4net.analysis.report`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .train import add_data_arguments

TARGETS = ("table1", "table2", "table3", "table4", "fig2")  # the grids of e4net.train.grids


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reproduce",
        help="run the grid behind a table or figure of the paper and write its markdown table",
        description="Train every configuration behind a table / figure of the paper once per seed (with the "
        "paper's recipe for its data set) and write OUT/TARGET.md (test error mean ± std over the seeds, params, "
        "MACs, the paper's values beside them) and OUT/TARGET.json; for fig2 also OUT/fig2.png. Finished runs are "
        "reused and interrupted ones resumed, so re-running continues the grid.",
    )
    p.add_argument("target", choices=TARGETS, help="the table or figure")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds per configuration (5, as in the paper)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the recipe's 200; milestones are rescaled)")
    p.add_argument("--out", metavar="DIR", default="runs/reproduce", help="output folder (runs/reproduce)")
    p.add_argument("--dry-run", action="store_true", help="list the runs (and which are done) without training")
    p.add_argument("--only", metavar="TEXT", help="only the configurations whose run id contains TEXT")
    add_data_arguments(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--limit-train-batches", type=int, metavar="N", help="smoke tests: at most N batches per epoch")
    p.add_argument("--limit-test-batches", type=int, metavar="N", help="smoke tests: at most N test batches")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..io import install_plain_warnings

    install_plain_warnings()
    from ..train.reproduce import Options, plan, reproduce, train_command

    out = Path(args.out)
    p = plan(args.target, args.seeds, out, args.only)
    options = Options(
        epochs=args.epochs, batch_size=args.batch_size, data_root=args.data_root, device=args.device,
        verify=args.verify, checksum=args.checksum, download=args.download,
        limit_train_batches=args.limit_train_batches, limit_test_batches=args.limit_test_batches,
        progress=args.progress,
    )  # fmt: skip
    if args.dry_run:
        print(f"{args.target}: {len(p.configurations)} configurations x {args.seeds} seeds = {len(p.jobs)} runs "
              f"({'the recipe' if not args.epochs else f'{args.epochs} epochs'} each), in {out / 'runs'}")  # fmt: skip
        for job in p.jobs:
            flag = "  (model not registered)" if job.run.model in p.unregistered else ""
            print(f"  [{job.status():7s}] {train_command(job, options)}{flag}")
        return 0
    outcome = reproduce(p, options, log=lambda msg: print(msg, file=sys.stderr))
    print(outcome.text)
    for path in outcome.written[2:]:
        print(f"wrote {path}", file=sys.stderr)
    print(f"wrote {outcome.written[0]}", file=sys.stderr)
    if outcome.failures:
        print(
            f"e4net reproduce: {outcome.failures} run(s) failed (see the table); re-run to retry them", file=sys.stderr
        )
        return 1
    return 1 if outcome.non_finite else 0
