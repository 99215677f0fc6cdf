"""`rampsearch run`: the whole job, search → retrain → report, in one command."""
from __future__ import annotations

import argparse

from ..config import parse_set
from ..report import build_report
from ..retrain import run_retrain
from ..search import SearchShortfall, run_search
from .common import logger
from .report import print_outcome
from .retrain import add_retrain_args
from .search import add_search_args, options_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="search, retrain the best against the hand-set ramp, and write the report",
        description="The main job: search SPACE.yaml under its budget, retrain the best schedule(s) and the "
                    "hand-set ramp over seeds, then write the comparison report. Rerunning resumes each step. "
                    "--set applies to the search's proxy trainings and to the retraining alike.")
    add_search_args(parser)
    add_retrain_args(parser)
    parser.add_argument("--report-out", metavar="DIR", help="where to write the report (default: RUN_DIR/report)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options, run_dir = options_from_args(args)
    log = logger(args)
    shortfall = None
    try:
        run_search(args.space, run_dir, options, args.backend, show_progress=not args.quiet and not args.json,
                   log=log)
    except SearchShortfall as exc:
        standing = exc.outcome.standing
        if standing.best is None or standing.handset is None:
            raise
        shortfall = exc  # a best and a baseline to retrain: go on, and exit non-zero at the end
        log(f"warning: {exc}; retraining what it found")
    run_retrain(run_dir, args.top, args.seeds, args.recipe, args.epochs, args.baselines, args.device,
                options.storage, parse_set(args.overrides), args.keep_checkpoints, args.init, args.target,
                args.img_size, log=log, max_seeds=args.max_seeds, max_hours=args.max_hours)
    print_outcome(build_report(run_dir, args.report_out, options.storage, log=log, target=args.target,
                               img_size=args.img_size), args.json)
    if shortfall:
        raise shortfall
    return 0
