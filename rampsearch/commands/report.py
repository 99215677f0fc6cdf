"""`rampsearch report`: the HTML + Markdown comparison report of a searched and retrained run."""
from __future__ import annotations

import argparse

from ..report import build_report
from .common import add_output_args, add_target_args, logger, print_json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write the comparison report (HTML + Markdown + CSV tables) of a run",
        description="Compare the searched schedules with the hand-set ramp: summary with confidence intervals, "
                    "ramp plot, search history and Pareto front, top trials, proxy fidelity, training curves, "
                    "frequency analysis and run metadata. The HTML is self-contained and opens offline. Nothing "
                    "is written unless RUN_DIR has been searched and retrained.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory that has been searched and retrained")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR/report, or "
                                                     "RUN_DIR/report-NAME-SIZE for a target)")
    add_target_args(parser, "report the retraining")
    parser.add_argument("--storage", metavar="URL", help="the search's RDB storage, if it used one")
    add_output_args(parser, json_help="print the paths and verdict as JSON")
    parser.set_defaults(func=run)


def print_outcome(outcome: dict, as_json: bool) -> None:
    if as_json:
        print_json(outcome)
    else:
        print(f"report: {outcome['html']} (Markdown: {outcome['markdown']})")
        print(outcome["verdict"])


def run(args: argparse.Namespace) -> int:
    print_outcome(build_report(args.run_dir, args.out, args.storage, log=logger(args), target=args.target,
                               img_size=args.img_size), args.json)
    return 0
