"""`rampsearch export`: one retrained schedule as a folder `timm.create_model("local-dir:DIR")` loads."""
from __future__ import annotations

import argparse

from ..export import export_schedule
from .common import add_output_args, add_target_args, nonnegative_int, print_json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a retrained schedule as a timm model folder (config.json + model.safetensors)",
        description="Write one retrained schedule of RUN_DIR as a folder timm loads like its own models: after "
                    "`import rampsearch`, timm.create_model('local-dir:DIR', pretrained=True) rebuilds the "
                    "architecture and ramp and loads the weights; timm's push_to_hf_hub shares it and timm's "
                    "train.py fine-tunes it (--model local-dir:DIR --pretrained). The folder holds timm's "
                    "config.json (architecture, model_args with the ramp, pretrained_cfg with the retraining's "
                    "evaluation transform) and model.safetensors (the weights results.csv reports, not EMA).")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory that has been retrained")
    parser.add_argument("--schedule", default="best", metavar="best|handset|NAME",
                        help="which retrained schedule (default best; top2, ... with --top K)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="which seed's weights (default 0)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    add_target_args(parser, "export the retraining")
    parser.add_argument("--storage", metavar="URL", help="the search's RDB storage, if it used one")
    add_output_args(parser, "print what was written as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    written = export_schedule(args.run_dir, args.out, args.schedule, args.seed, args.target, args.img_size,
                              args.storage)
    if args.json:
        print_json(written)
    else:
        print(f"{written['schedule']} seed {written['seed']} (top-1 {written['top1']:.2f}%) -> {written['out']}; "
              f"load it with timm.create_model({written['model']!r}, pretrained=True) after `import rampsearch`")
    return 0
