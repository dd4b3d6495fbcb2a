"""``e4net`` entry point: one sub-command per module of :mod:`e4net.cli`.

Each sub-command module defines ``add_parser(subparsers)`` (returning its parser, whose ``func`` default is
the function to run with the parsed args, returning an exit status).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import E4NetError

# Sub-command modules, in the order --help lists them.
COMMANDS: tuple[str, ...] = ("models", "train", "eval", "reproduce", "bench", "export", "predict", "publish")
# Commands that run models: they start with e4net.tune_cpu_allocator() unless E4NET_MALLOC_TUNING=0.
COMPUTE_COMMANDS = ("train", "eval", "reproduce", "bench", "export", "predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e4net",
        description="Exact, fast p4/p4m-equivariant CNNs: the E4-Net reference implementation.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"e4net {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command in COMPUTE_COMMANDS and os.environ.get("E4NET_MALLOC_TUNING", "1") != "0":
        from .. import tune_cpu_allocator

        tune_cpu_allocator()
    try:
        return int(args.func(args) or 0)
    except (E4NetError, ValueError, FileNotFoundError) as exc:
        print(f"e4net {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"e4net {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `e4net models | head`: the reader left; not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python's exit flush from raising again
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
