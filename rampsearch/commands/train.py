"""`rampsearch train`: train one model with one ramp (a proxy run or a full retraining).

Precedence of settings, lowest to highest: the recipe file (--recipe), --set KEY=VALUE, then the
dedicated flags (--epochs, --seed). See rampsearch/config.py for the recipe schema.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..config import TrainConfig, parse_set
from ..data import SYNTHETIC
from ..errors import ensure_directory
from .common import (add_device_arg, add_keep_checkpoints_arg, add_model_args, add_output_args, add_set_arg,
                     nonnegative_int, positive_int, print_training, resolve_model_args)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model with a ramp (proxy or full recipe), resumable",
        description="Train an iFormer with a given ramp on synthetic-freq data or an image folder, with the "
                    "paper's or the proxy recipe. Rerunning the same command resumes from the last "
                    "checkpoint in --out. Under `torchrun --nproc_per_node N` it trains data-parallel. "
                    "Settings, lowest to highest precedence: the recipe file, --set KEY=VALUE, then "
                    "--epochs and --seed.")
    add_model_args(parser)
    parser.add_argument("--data", default=SYNTHETIC, metavar=f"{SYNTHETIC}|PATH",
                        help=f"'{SYNTHETIC}' (built-in, default) or an image folder: PATH/train/CLASS/* and "
                             "PATH/val/CLASS/*, or PATH/CLASS/* split by the recipe's val_split")
    parser.add_argument("--epochs", type=positive_int, metavar="N", help="epochs to train (default: the recipe's)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory: checkpoints, metrics.csv, model.safetensors, result.json")
    parser.add_argument("--recipe", default="proxy", metavar="proxy|paper|FILE",
                        help="training recipe (default proxy): a shipped one or a YAML file")
    add_set_arg(parser, "the training")
    parser.add_argument("--seed", type=nonnegative_int, help="training seed (default: the recipe's)")
    add_device_arg(parser)
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over even if --out holds a checkpoint or the finished result of this run")
    add_keep_checkpoints_arg(parser)
    add_output_args(parser, 'print the final metrics as JSON: {"top1", "top5", "loss", "epochs", "seconds", ...}')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import fit, preflight

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    arch, ramp, img_size = resolve_model_args(args)
    config = TrainConfig(architecture=arch.to_dict(), ramp=list(ramp.ratios), img_size=img_size, data=args.data,
                         recipe=args.recipe, overrides=parse_set(args.overrides), epochs=args.epochs,
                         seed=args.seed, out=args.out, device=args.device, resume=args.resume, quiet=args.quiet,
                         keep_checkpoints=args.keep_checkpoints)
    preflight(config)
    ensure_directory(args.out, "--out")
    print_training(fit(config), args.json, "", args.out)
    return 0
