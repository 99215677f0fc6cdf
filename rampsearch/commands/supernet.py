"""`rampsearch supernet`: train a search space's weight-sharing supernet on its own (rampsearch.supernet).

A one-shot search trains it itself; this command trains it ahead (e.g. on a GPU machine) so that
`search --method one-shot --supernet DIR` (on any machine) only scores candidates on it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import parse_set
from ..errors import ensure_directory
from .common import add_device_arg, add_output_args, add_set_arg, print_training


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "supernet", help="train a space's weight-sharing supernet (for --method one-shot)",
        description="Train the supernet of SPACE.yaml: one set of weights for every ramp the space can produce, "
                    "trained by the sandwich rule (most-conv, most-attention and `supernet.random_ramps` sampled "
                    "ramps per step) with the space's proxy data and recipe, holding out the search split that "
                    "scores candidates. Rerunning the same command resumes from the last checkpoint in --out. "
                    "Under `torchrun --nproc_per_node N` it trains data-parallel.")
    parser.add_argument("space", metavar="SPACE.yaml", help="search space (see search_spaces/README.md)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory: checkpoints, metrics.csv, model.safetensors, result.json")
    add_device_arg(parser)
    add_set_arg(parser, "the supernet's training (over the space's proxy.overrides)")
    add_output_args(parser, 'print the final metrics as JSON: {"top1", "top5", "loss", "epochs", "seconds", ...}')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..search.load import load_space
    from ..search.methods.one_shot import METHOD, supernet_config, train_supernet
    from ..train import preflight

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    space = load_space(args.space, parse_set(args.overrides))
    METHOD.check_space(space)  # the supernet is the one-shot method's, whatever method the space names
    preflight(supernet_config(space, None, args.device))
    ensure_directory(args.out, "--out")
    result = train_supernet(space, Path(args.out), args.device, quiet=args.quiet)
    print_training(result, args.json, f"supernet of {space.name}, its hand-set sub-network on the search split: ",
                   args.out)
    return 0
