"""`rampsearch flops`: parameters, fvcore FLOPs and a per-stage table of one model and ramp."""
from __future__ import annotations

import argparse

from ..flops import flop_report, flops_model
from ..models import build_iformer
from .common import add_model_args, add_output_args, positive_int, print_json, resolve_model_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flops", help="parameters, FLOPs and a per-stage table of a model with a ramp",
        description="Build the model, count its FLOPs with fvcore (one multiply-add = one FLOP, the paper's "
                    "convention) and print parameters, FLOPs and a per-stage table. The closed-form estimate "
                    "that searches use is printed beside the fvcore count.")
    add_model_args(parser)
    parser.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument("--no-trace", action="store_true",
                        help="closed form only: no model is built or traced (milliseconds, the numbers searches "
                             "use; equal to fvcore's count)")
    add_output_args(parser, 'print {"params", "flops", "ramp", "per_block", ...} as JSON')
    parser.set_defaults(func=run)


def _stage_of(param_name: str) -> str:
    top = param_name.split(".")[0]
    digits = "".join(ch for ch in top if ch.isdigit())
    if top.startswith(("patch_embed", "pos_embed", "blocks")):
        return digits or "1"
    return "head"


def run(args: argparse.Namespace) -> int:
    arch, ramp, img_size = resolve_model_args(args)
    estimate = flops_model(arch, img_size, args.num_classes)
    heads = ramp.high_heads(arch)
    closed_form, closed_params = estimate.of_heads(heads), estimate.params_of_heads(heads)
    channels = ramp.channels(arch)
    per_block = [
        {"block": b, "stage": s + 1, "width": w, "ratio": r, "high_channels": ch, "low_channels": cl, "flops": f}
        for b, (s, w, r, (ch, cl), f) in enumerate(zip(arch.block_stages, arch.block_widths, ramp.ratios,
                                                        channels, estimate.per_block(ramp)))]
    name = args.variant or args.arch
    if args.no_trace:
        if args.json:
            print_json({"params": closed_params, "flops": closed_form, "method": "closed form", "img_size": img_size,
                        "ramp": list(ramp.ratios), "per_block": per_block, "architecture": arch.to_dict()})
        else:
            print(f"{name} @ {img_size}px: {closed_params:,} params, {closed_form:,} FLOPs "
                  f"({closed_form / 1e9:.3f} GFLOPs, closed form; fvcore multiply-adds, not traced)")
        return 0
    model = build_iformer(**arch.build_kwargs(), ramp=ramp, img_size=img_size, num_classes=args.num_classes)
    report = flop_report(model, img_size)
    params = sum(p.numel() for p in model.parameters())
    if args.json:
        print_json({"params": params, "flops": report.total, "flops_estimate": closed_form, "method": "fvcore",
                    "img_size": img_size, "ramp": list(ramp.ratios), "per_block": per_block,
                    "architecture": arch.to_dict(), "unsupported_ops": report.unsupported})
        return 0
    print(f"{name} @ {img_size}px: {params:,} params, {report.total:,} FLOPs "
          f"({report.total / 1e9:.3f} GFLOPs, fvcore multiply-adds; closed form {closed_form:,})")
    if args.quiet:
        return 0
    stage_params: dict[str, int] = {}
    for param_name, p in model.named_parameters():
        stage_params[_stage_of(param_name)] = stage_params.get(_stage_of(param_name), 0) + p.numel()
    print(f"{'stage':>5} {'blocks':>6} {'width':>5}  {'params':>11} {'GFLOPs':>7}  C_h/C per block")
    for s, (depth, width, ratios) in enumerate(zip(arch.depths, arch.embed_dims, ramp.describe_stages(arch))):
        module_flops = report.by_module.get("patch_embed" if s == 0 else f"patch_embed{s + 1}", 0) + \
            report.by_module.get(f"blocks{s + 1}", 0)
        print(f"{s + 1:>5} {depth:>6} {width:>5}  {stage_params.get(str(s + 1), 0):>11,} "
              f"{module_flops / 1e9:>7.3f}  {ratios}")
    print(f"{'head':>5} {'':>6} {'':>5}  {stage_params.get('head', 0):>11,} "
          f"{(report.by_module.get('norm', 0) + report.by_module.get('head', 0)) / 1e9:>7.3f}  (final norm + head)")
    print("not counted by fvcore (zero FLOPs): " +
          ", ".join(f"{op.removeprefix('aten::')}×{n}" for op, n in sorted(report.unsupported.items())))
    return 0
