"""Arguments several subcommands share: which model (variant or architecture file) and which ramp."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Any

from ..architecture import VARIANTS, Architecture
from ..errors import UserError, read_yaml_mapping
from ..ramp import RampSchedule, load_ramp
from ..sequential import AUTO, MIN_SEEDS


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--variant", choices=sorted(VARIANTS),
                       help="a paper variant (small/base/large) or the CPU proxy 'nano'")
    group.add_argument("--arch", metavar="FILE",
                       help="YAML/JSON with an 'architecture' mapping (depths, embed_dims, head_dim, mlp_ratio, "
                            "pool_sizes), e.g. a search's best.yaml")
    parser.add_argument("--ramp", default="handset", metavar="handset|FILE|r1,r2,...",
                        help="per-block C_h/C: 'handset' (default), a ramp file (best.yaml, or YAML/JSON with "
                             "'ramp' or 'knots'), or comma-separated ratios, one per block")
    parser.add_argument("--img-size", type=positive_int, default=None, metavar="N",
                        help="square input size (default: 224, 64 for nano)")


def resolve_model_args(args: argparse.Namespace) -> tuple[Architecture, RampSchedule, int]:
    """(architecture, validated ramp, image size) from --variant/--arch, --ramp and --img-size."""
    if args.variant:
        arch = Architecture.resolve(args.variant)
        default_size = VARIANTS[args.variant].img_size
    else:
        data = read_yaml_mapping(args.arch, "architecture file")
        arch = Architecture.from_dict(data.get("architecture", data))
        default_size = data.get("img_size", 224)
    img_size = args.img_size if args.img_size is not None else default_size
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 32:
        raise UserError(f"image size {img_size!r}: expected an integer >= 32 (the model downsamples by 32)")
    return arch, load_ramp(args.ramp, arch), img_size


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_training(result: Any, as_json: bool, what: str, out: str) -> None:
    """A finished training's summary (a train.TrainResult), once under torchrun (rank 0), as JSON or one line."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        print_json(result.summary())
        return
    final = result.final
    print(f"{what}top-1 {final['top1']:.2f}%  top-5 {final['top5']:.2f}%  loss {final['loss']:.4f}  ({result.epochs} "
          f"epochs, {result.seconds:.1f} s, {result.params:,} params) -> {out}")


# -- flags every command that trains shares, spelled and checked the same way -----------------------

def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0, negatives and non-integers are refused, never defaulted)."""
    return _integer(text, minimum=1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds)."""
    return _integer(text, minimum=0)


def seeds_setting(text: str) -> int | str:
    """argparse type: a number of seeds >= 1, or auto (rampsearch.sequential)."""
    return AUTO if text == AUTO else _integer(text, minimum=1, alternative=f" or {AUTO}")


def seeds_cap(text: str) -> int:
    """argparse type: --max-seeds, at least the seeds of the first look (rampsearch.sequential)."""
    return _integer(text, minimum=MIN_SEEDS)


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (hours)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _integer(text: str, minimum: int, alternative: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{alternative}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def device_name(text: str) -> str:
    """argparse type: auto, cpu, cuda or cuda:N (whether that GPU exists is checked before training)."""
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default="auto", metavar="auto|cpu|cuda|cuda:N",
                        help="training device (default auto: the GPU when there is one, else the CPU)")


def add_set_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a recipe key of {what}, e.g. --set lr=1e-3 --set batch_size=32 "
                             "(repeatable; keys: rampsearch/configs/recipes/paper.yaml)")


def add_keep_checkpoints_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each finished training's resume state (ckpt-*.safetensors, checkpoint.json); "
                             "by default only model.safetensors, metrics and result.json stay")


def add_target_args(parser: argparse.ArgumentParser, what: str) -> None:
    """--target and --img-size: which retraining of a run (retrain, run, report, export name it the same way)."""
    parser.add_argument("--target", metavar="small|base|large|nano|proxy|FILE",
                        help=f"{what} on this target: a paper variant, 'proxy' (the searched architecture) or a "
                             "target YAML file (search_spaces/README.md, 'Transfer'); the searched ramps are mapped "
                             "onto it stage by stage and compared with its own hand-set ramp, in "
                             "RUN_DIR/retrain-NAME-SIZE (default: the space's target: section, else proxy)")
    parser.add_argument("--img-size", type=positive_int, metavar="N",
                        help="the target's input size (default: the target's own, 224 for small/base/large)")


def add_output_args(parser: argparse.ArgumentParser, json_help: str) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress lines; only the result and errors")
    parser.add_argument("--json", action="store_true", help=json_help)


def logger(args: argparse.Namespace):
    """Where a command's progress lines go: stdout, stderr when stdout carries JSON, nowhere with --quiet."""
    if args.quiet:
        return lambda message: None
    if args.json:
        return lambda message: print(message, file=sys.stderr)
    return print
