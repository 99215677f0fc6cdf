"""Does synthetic-freq reward a mixed ramp? Hand-set vs pure-attention vs pure-conv, several seeds.

Trains the demo proxy (iFormer-nano, 64 px, synthetic-freq, proxy recipe) once per ramp and seed
through `rampsearch.train.fit`: the hand-set ramp, pure attention, pure conv, and a mixed ramp the
other way round (pure attention in stages 1-2, half conv in stages 3-4). Prints a markdown table:
top-1 mean ± std over seeds, the per-seed values, the difference to the hand-set ramp with its 95%
confidence interval and p-value (paired t-test over seeds, as the comparison report does), how often
each cue alone is right (the low-frequency class: the layout; the high-frequency class: the
texture's orientation; chance is 1/4 each with the default 4 x 4 classes) and the seconds per trial.

    python benchmarks/calibrate_synthetic.py                 # 3 seeds, the proxy recipe as shipped
    python benchmarks/calibrate_synthetic.py --seeds 0 1 2 3 4 --set epochs=4 --threads 1
    python benchmarks/calibrate_synthetic.py --set epochs=16 --set synthetic_texture=dot-lattice
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rampsearch.architecture import Architecture  # noqa: E402
from rampsearch.checkpoint import load_weights  # noqa: E402
from rampsearch.config import TrainConfig, load_recipe, parse_set  # noqa: E402
from rampsearch.data import build_datasets  # noqa: E402
from rampsearch.models import build_iformer  # noqa: E402
from rampsearch.ramp import RampSchedule  # noqa: E402
from rampsearch.report.stats import compare  # noqa: E402
from rampsearch.train import fit  # noqa: E402


def ramps(arch: Architecture) -> dict[str, list[float]]:
    n = arch.num_blocks
    early = arch.depths[0] + arch.depths[1]
    return {"hand-set": list(RampSchedule.handset(arch).ratios), "pure attention (all 0)": [0.0] * n,
            "pure conv (all 1)": [1.0] * n,
            "attention early (stages 1-2: 0, 3-4: 0.5)": [0.0] * early + [0.5] * (n - early)}


@torch.no_grad()
def cue_accuracy(out: Path, config: TrainConfig, high_classes: int) -> tuple[float, float]:
    """Share of val images whose predicted low / high class is right (from the saved final weights)."""
    recipe = load_recipe(config.recipe, config.overrides)
    data = build_datasets("synthetic-freq", recipe, config.img_size)
    model = build_iformer(config.variant, ramp=config.ramp, img_size=config.img_size, num_classes=data.num_classes)
    load_weights(out / "model.safetensors", model)
    model.eval()
    images = torch.stack([data.val[i][0] for i in range(len(data.val))])
    labels = torch.tensor([data.val[i][1] for i in range(len(data.val))])
    predicted = torch.cat([model(chunk).argmax(1) for chunk in images.split(256)])
    return ((predicted // high_classes == labels // high_classes).float().mean().item() * 100,
            (predicted % high_classes == labels % high_classes).float().mean().item() * 100)


def versus_handset(top1: list[float], handset: list[float] | None) -> str:
    """'Δ [low, high], p=…' of this ramp minus the hand-set ramp, paired by seed; blank without a hand-set run."""
    if handset is None:
        return ""
    c = compare(top1, handset, paired=True)
    return f"{c.difference:+.1f} [{c.ci_low:+.1f}, {c.ci_high:+.1f}], p={c.p_value:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="nano")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipe", default="proxy")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--only", nargs="+", help="ramps to run, by a word of their names (default: all)")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = parse_set(args.overrides)
    high = load_recipe(args.recipe, overrides).synthetic_high_classes
    rows, runs, handset = [], [], None
    for name, ramp in ramps(Architecture.resolve(args.variant)).items():
        if args.only and not any(o in name for o in args.only):
            continue
        results = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                config = TrainConfig(variant=args.variant, ramp=ramp, img_size=args.img_size, recipe=args.recipe,
                                     overrides=overrides, seed=seed, out=tmp, quiet=True)
                result = fit(config)
                low, high_right = cue_accuracy(Path(tmp), config, high)
            results.append({"ramp": name, "seed": seed, "top1": result.final["top1"], "low": low, "high": high_right,
                            "seconds": result.seconds, "img_s": result.img_s})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        runs += results
        top1 = [r["top1"] for r in results]
        rows.append(f"| {name} | {statistics.mean(top1):.1f} ± {statistics.stdev(top1) if len(top1) > 1 else 0:.1f} "
                    f"| {' / '.join(f'{t:.1f}' for t in top1)} | {versus_handset(top1, handset)} "
                    f"| {statistics.mean(r['low'] for r in results):.1f} "
                    f"| {statistics.mean(r['high'] for r in results):.1f} "
                    f"| {statistics.mean(r['seconds'] for r in results):.1f} |")
        if name == "hand-set":  # the ramps after it are compared with it
            handset = top1
    print(f"{args.variant} @ {args.img_size} px, recipe {args.recipe} {overrides or ''}, seeds {args.seeds}\n")
    print("| ramp | top-1 % (mean ± std) | per seed | Δ vs hand-set [95% CI], p | low-freq class right % "
          "| high-freq class right % | s / trial |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
