"""`rampsearch retrain`: fully retrain a search's best schedules and the hand-set ramp over seeds."""
from __future__ import annotations

import argparse
import sys

from ..retrain import run_retrain
from .common import print_json


def add_retrain_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top", type=int, help="retrain the best K distinct within-budget schedules "
                                                "(default: the space's retrain.top, else 1)")
    parser.add_argument("--seeds", type=int,
                        help="seeds per schedule, the same for all (default: retrain.seeds, else 3)")
    parser.add_argument("--recipe", help="paper | proxy | a recipe YAML (default: retrain.recipe, else paper)")
    parser.add_argument("--epochs", type=int, help="epochs (default: retrain.epochs, else the recipe's)")
    parser.add_argument("--baselines", action="store_true",
                        help="also train DeiT-style ViT, CrossViT and T2T-ViT at FLOPs matched to the budget")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "retrain", help="retrain the best schedules and the hand-set ramp with the full recipe",
        description="Retrain the search's best (and top-K) within-budget schedules and the hand-set ramp on the "
                    "same data with the same seeds. Resumable: rerun the same command after an interruption. "
                    "Writes RUN_DIR/retrain/ (results.csv, one folder per schedule and seed).")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a search's run directory")
    add_retrain_args(parser)
    parser.add_argument("--storage", metavar="URL", help="the search's RDB storage, if it used one")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="training device (default: cuda if available)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    frame = run_retrain(args.run_dir, args.top, args.seeds, args.recipe, args.epochs, args.baselines, args.device,
                        args.storage, log=log)
    summary = frame.groupby("name", sort=False)["top1"].agg(["mean", "std", "count"]).reset_index()
    if args.json:
        print_json({"runs": frame.to_dict(orient="records"), "summary": summary.to_dict(orient="records")})
        return 0
    for row in summary.itertuples(index=False):
        std = 0.0 if row.count < 2 else row.std
        print(f"{row.name:>10}: top-1 {row.mean:.2f} ± {std:.2f}% over {row.count} seed(s)")
    return 0
