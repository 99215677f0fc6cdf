"""The `rampsearch` command line (also `python cli.py`).

Each subcommand lives in rampsearch/commands/<name>.py and exposes `add_parser(subparsers)`,
which registers its arguments and sets `func=run`, and `run(args) -> int`. User errors are
raised as `rampsearch.errors.UserError` and printed as one line, with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

COMMANDS = ["flops", "train", "search", "retrain", "report", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rampsearch",
        description="Search the Inception Transformer's frequency ramp (per-block C_h/C) under a FLOPs budget.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"rampsearch.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise from imports
    from .errors import UserError

    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except UserError as exc:
        print(f"rampsearch {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        print(f"rampsearch {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
