"""`rampsearch retrain`: retrain a search's best schedules and the hand-set ramp over seeds."""
from __future__ import annotations

import argparse

from ..config import parse_set
from ..retrain import run_retrain
from ..sequential import MIN_SEEDS
from .common import (add_device_arg, add_keep_checkpoints_arg, add_output_args, add_set_arg, add_target_args, logger,
                     positive_float, positive_int, print_json, seeds_cap, seeds_setting)


def add_retrain_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top", type=positive_int, help="retrain the best K distinct within-budget searched "
                                                         "schedules (default: the space's retrain.top, else 1)")
    parser.add_argument("--seeds", type=seeds_setting,
                        help="seeds per schedule, the same for all (default: retrain.seeds, else 3); one seed "
                             "gives no test of the difference. auto: rounds of one seed each until the best-vs-"
                             "hand-set difference is decided by a rule valid under repeated looks, or a cap is hit")
    parser.add_argument("--max-seeds", type=seeds_cap,
                        help=f"with --seeds auto: stop undecided after this many seeds (default: retrain.max_seeds, "
                             f"else 8; at least {MIN_SEEDS}); resume with the same value, it sets the rule")
    parser.add_argument("--max-hours", type=positive_float,
                        help="with --seeds auto: start no round that would pass this many hours of training "
                             "(default: retrain.max_hours, else none)")
    parser.add_argument("--recipe", help="paper | proxy | a recipe YAML (default: retrain.recipe, else paper)")
    parser.add_argument("--epochs", type=positive_int, help="epochs (default: retrain.epochs, else the recipe's)")
    parser.add_argument("--init", choices=["scratch", "supernet"],
                        help="scratch: random initial weights, the fair verdict (default: retrain.init, else "
                             "scratch); supernet: fine-tune each schedule (the hand-set ramp too) from the weights "
                             "the one-shot search's supernet passes on, as Once-for-All does")
    parser.add_argument("--baselines", action="store_true",
                        help="also train DeiT-style ViT, CrossViT and T2T-ViT at FLOPs matched to the budget")
    add_target_args(parser, "retrain")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "retrain", help="retrain the best schedules and the hand-set ramp over seeds",
        description="Retrain the search's best (and top-K) within-budget schedules and the hand-set ramp on the "
                    "same data with the same seeds and recipe. Every model and the data are checked before "
                    "anything trains. Resumable: rerun the same command after an interruption. Writes "
                    "RUN_DIR/retrain/ (plan.json, results.csv, one folder per schedule and seed).")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a search's run directory")
    add_retrain_args(parser)
    parser.add_argument("--storage", metavar="URL", help="the search's RDB storage, if it used one")
    add_device_arg(parser)
    add_set_arg(parser, "the retraining (over the space's proxy and retrain overrides)")
    add_keep_checkpoints_arg(parser)
    add_output_args(parser, "print the results as JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    frame = run_retrain(args.run_dir, args.top, args.seeds, args.recipe, args.epochs, args.baselines, args.device,
                        args.storage, parse_set(args.overrides), args.keep_checkpoints, args.init, args.target,
                        args.img_size, log=logger(args), max_seeds=args.max_seeds, max_hours=args.max_hours)
    summary = frame.groupby("name", sort=False)["top1"].agg(["mean", "std", "count"]).reset_index()
    if args.json:
        print_json({"runs": frame.to_dict(orient="records"), "summary": summary.to_dict(orient="records")})
        return 0
    for row in summary.itertuples(index=False):
        spread = "(1 seed: no spread)" if row.count < 2 else f"± {row.std:.2f}% over {row.count} seeds"
        print(f"{row.name:>10}: top-1 {row.mean:.2f}% {spread}")
    return 0
