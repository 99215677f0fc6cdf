"""The `rampsearch` command line (also `python cli.py`).

Each subcommand lives in rampsearch/commands/<name>.py and exposes `add_parser(subparsers)`,
which registers its arguments and sets `func=run`, and `run(args) -> int`. Exit status: 0 done;
1 the run achieved nothing (`RunFailed`, one line saying why); 2 bad input (`UserError`, one line
naming what is wrong and what would be right; argparse's usage errors too); 130 Ctrl-C. Every
message passes through `redact`, so no storage password is ever printed.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

COMMANDS = ["flops", "train", "supernet", "search", "retrain", "report", "export", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rampsearch",
        description="Search the Inception Transformer's frequency ramp (per-block C_h/C) under a FLOPs budget.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"rampsearch.commands.{name}").add_parser(subparsers)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rampsearch")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise from imports
    from .errors import RunFailed, UserError
    from .redact import redact

    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except UserError as exc:
        print(f"rampsearch {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as exc:
        print(f"rampsearch {args.command}: failed: {redact(str(exc))}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        resume = " (rerun the same command to resume the unfinished trial(s) from their checkpoints)" \
            if args.command in ("search", "run") else " (rerun the same command to resume)"
        print(f"rampsearch {args.command}: interrupted{resume}", file=sys.stderr)
        sys.exit(130)
