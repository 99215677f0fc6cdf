"""`rampsearch search`: search ramps (and architectures) of a space under its FLOPs budget."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import parse_set
from ..search import SearchOptions, SearchOutcome, SearchShortfall, load_space, methods, run_search
from ..search.rdb import check_storage_url
from ..search.score import Score
from .common import (add_device_arg, add_keep_checkpoints_arg, add_output_args, add_set_arg, logger, positive_int,
                     print_json)


def add_search_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", metavar="SPACE.yaml", help="search space (see search_spaces/README.md)")
    parser.add_argument("--trials", type=positive_int,
                        help="trials to train (default: the space's search.trials); over-budget candidates are "
                             "rejected before training and interrupted trials are retried: neither counts")
    parser.add_argument("--backend", choices=["optuna", "ray"], default="optuna",
                        help="optuna: embedded, no server (default); ray: Ray Tune across workers and machines")
    parser.add_argument("--study", help="study name (default: the space's name); several processes or machines "
                                        "with the same --study and --storage share one study")
    parser.add_argument("--storage", metavar="URL",
                        help="RDB storage shared by several machines, e.g. postgresql://user:pass@host/db "
                             "(default: a journal file in --out)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/SPACE_NAME); rerunning the "
                                                     "same command continues the study there")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="optuna: processes on this machine (default 1)")
    parser.add_argument("--address", help="ray: 'auto' or HOST:PORT of a running Ray cluster "
                                          "(default: start a local one)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="ray: CPUs per trial (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="ray: GPUs per trial; fractions such as 0.25 pack several trials on one GPU")
    parser.add_argument("--method", choices=methods.names(),
                        help="how candidates are scored (default: the space's `method`, else train): train: a short "
                             "proxy training each; one-shot: on a weight-sharing supernet trained once")
    parser.add_argument("--supernet", metavar="DIR",
                        help="one-shot: a supernet trained for this space by `rampsearch supernet` (default: train "
                             "one in RUN_DIR/supernet first)")
    add_device_arg(parser)
    add_set_arg(parser, "the proxy trainings (over the space's proxy.overrides)")
    add_keep_checkpoints_arg(parser)
    add_output_args(parser, "print the outcome as JSON on stdout")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="search ramps (and architectures) under a FLOPs budget",
        description="Run or resume a search: every candidate's FLOPs are checked in closed form before it "
                    "trains; the hand-set ramp is the first trial. Before the first trial, what every trial "
                    "needs (device, recipe, data) is checked once. Writes trials.csv, trials.parquet, best.yaml "
                    "and the study to the run directory. Exit status: 0 when at least one trial completed, 1 "
                    "when none did (the first reason is printed), 2 for bad input, 130 after Ctrl-C (the "
                    "running trial is retried when you rerun the same command).")
    add_search_args(parser)
    parser.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> tuple[SearchOptions, Path]:
    from ..errors import UserError

    overrides = parse_set(args.overrides)
    space = load_space(args.space, overrides)
    if args.gpus_per_trial < 0 or args.cpus_per_trial <= 0:
        raise UserError("--gpus-per-trial must be >= 0 and --cpus-per-trial > 0")
    if args.storage:
        check_storage_url(args.storage)
    options = SearchOptions(trials=args.trials if args.trials is not None else space.search.trials,
                            study=args.study or space.name, storage=args.storage, workers=args.workers,
                            address=args.address, cpus_per_trial=args.cpus_per_trial,
                            gpus_per_trial=args.gpus_per_trial, device=args.device, overrides=overrides,
                            keep_checkpoints=args.keep_checkpoints, method=args.method, supernet=args.supernet)
    return options, Path(args.out or Path("runs") / space.name)


def run(args: argparse.Namespace) -> int:
    options, run_dir = options_from_args(args)
    try:
        outcome = run_search(args.space, run_dir, options, args.backend,
                             show_progress=not args.quiet and not args.json, log=logger(args))
    except SearchShortfall as exc:  # the summary of what it did reach, then the one line of why not
        _print_summary(exc.outcome, run_dir, args.json)
        raise
    _print_summary(outcome, run_dir, args.json)
    return 0


def _with_se(score: Score, trial: dict) -> str:
    """A trial's score with its standard error over images, when recorded."""
    se = trial.get("score_se")
    return score.format(trial["score"]) + (f" ± {score.format(se)} (s.e.)" if se is not None else "")


def _print_summary(outcome: SearchOutcome, run_dir: Path, as_json: bool) -> None:
    summary = outcome.summary()
    if as_json:
        print_json(summary)
        return
    c = summary["counts"]
    print(f"{c['done']} complete, {c['pruned']} pruned, {c['failed']} failed, {c['over_budget']} over budget, "
          f"{c['duplicate']} repeats in {summary['seconds']:.0f}s; study '{summary['study']}' in {run_dir}")
    if summary["complete"]:
        print(f"search {summary['complete']}")
    best, score = summary["best"], outcome.standing.score
    if best:
        print(f"best searched: trial {best['trial']}: {score.short} {_with_se(score, best)}, "
              f"{best['flops'] / 1e9:.4g} GFLOPs, {best['params'] / 1e6:.3g}M params -> {outcome.paths['best']}")
    elif summary["handset"]:
        print(f"no searched schedule completed; the hand-set ramp scored {_with_se(score, summary['handset'])}")
    if summary["note"]:
        print(f"note: {summary['note']}")
    print(f"trials: {outcome.paths['csv']}")
