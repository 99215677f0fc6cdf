"""`rampsearch search`: search ramps (and architectures) of a space under its FLOPs budget."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from ..search import SearchOptions, run_search
from ..search.results import redact_url
from ..search.space import load_space
from .common import print_json


def add_search_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", metavar="SPACE.yaml", help="search space (see search_spaces/README.md)")
    parser.add_argument("--trials", type=int,
                        help="trained trials (default: the space's search.trials); over-budget candidates "
                             "are rejected before training and not counted")
    parser.add_argument("--backend", choices=["optuna", "ray"], default="optuna",
                        help="optuna: embedded, no server (default); ray: Ray Tune across workers and machines")
    parser.add_argument("--study", help="study name (default: the space's name); several processes or machines "
                                        "with the same --study and --storage share one study")
    parser.add_argument("--storage", metavar="URL",
                        help="RDB storage shared by several machines, e.g. postgresql://user:pass@host/db "
                             "(default: a journal file in --out)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/SPACE_NAME); rerunning the "
                                                     "same command continues the study there")
    parser.add_argument("--workers", type=int, default=1, help="optuna: processes on this machine (default 1)")
    parser.add_argument("--address", help="ray: 'auto' or HOST:PORT of a running Ray cluster "
                                          "(default: start a local one)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="ray: CPUs per trial (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="ray: GPUs per trial; fractions such as 0.25 pack several trials on one GPU")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="training device (default: cuda if available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="search ramps (and architectures) under a FLOPs budget",
        description="Run or resume a search: every candidate's FLOPs are checked in closed form before it "
                    "trains; the hand-set ramp is the first trial. Writes trials.csv, trials.parquet, best.yaml "
                    "and the study to the run directory.")
    add_search_args(parser)
    parser.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> tuple[SearchOptions, Path]:
    space = load_space(args.space)
    trials = args.trials or space.search["trials"]
    for name, value in (("--trials", trials), ("--workers", args.workers)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if args.gpus_per_trial < 0 or args.cpus_per_trial <= 0:
        raise UserError("--gpus-per-trial must be >= 0 and --cpus-per-trial > 0")
    if args.storage and not args.storage.startswith(("postgresql", "mysql", "sqlite")):
        raise UserError(f"--storage {redact_url(args.storage)}: expected an RDB URL such as "
                        "postgresql://user:password@host:5432/db")
    options = SearchOptions(trials=trials, study=args.study or space.name, storage=args.storage,
                            workers=args.workers, address=args.address, cpus_per_trial=args.cpus_per_trial,
                            gpus_per_trial=args.gpus_per_trial, device=args.device)
    return options, Path(args.out or Path("runs") / space.name)


def run(args: argparse.Namespace) -> int:
    options, run_dir = options_from_args(args)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json or args.quiet else print
    outcome = run_search(args.space, run_dir, options, args.backend,
                         show_progress=not args.quiet and not args.json, log=log)
    summary = outcome.summary()
    if args.json:
        print_json(summary)
        return 0
    c = summary["counts"]
    print(f"{c['done']} complete, {c['pruned']} pruned, {c['failed']} failed, {c['over_budget']} over budget "
          f"in {summary['seconds']:.0f}s; study '{summary['study']}' in {run_dir}")
    best = summary["best"]
    if best:
        tag = " (the hand-set ramp)" if best["baseline"] else ""
        print(f"best: trial {best['trial']}{tag}: top-1 {best['accuracy']:.2f}%, "
              f"{best['flops'] / 1e9:.4g} GFLOPs, {best['params'] / 1e6:.3g}M params -> {outcome.paths['best']}")
    print(f"trials: {outcome.paths['csv']}")
    return 0
