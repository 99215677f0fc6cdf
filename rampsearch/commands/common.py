"""Arguments several subcommands share: which model (variant or architecture file) and which ramp."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..architecture import VARIANTS, Architecture
from ..errors import UserError, read_yaml_mapping
from ..ramp import RampSchedule, load_ramp


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
    parser.add_argument("--img-size", type=int, default=None, metavar="N",
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
    img_size = args.img_size or default_size
    if img_size < 32:
        raise UserError(f"--img-size {img_size} is too small: the model downsamples by 32, use at least 32")
    return arch, load_ramp(args.ramp, arch), img_size


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
