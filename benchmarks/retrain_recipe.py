"""The demo's retraining recipe by the smallest difference it can detect per minute (issue 21).

Two schedules of the demo space, the hand-set ramp and a searched one (default: the "best" of the
committed reports/demo/ramps.csv), retrained as `rampsearch retrain` retrains them (train_config with
data_split final: all training images, scored on val) under a few recipe settings, each over --seeds
seeds. Per setting: top-1 mean and std of each schedule, the std of the per-seed paired differences
(same seed: same data order, augmentation and, with shared_init, initial weights) against the
unpaired one, sqrt(sd_a^2 + sd_b^2), the minutes one paired seed costs (both schedules), the
difference detectable with 80% power at two-sided 0.05 with 4 seeds, and the time-normalised figure of
merit sd_paired * sqrt(minutes per paired seed): for many seeds the detectable difference within T
minutes is about 2.8 sd / sqrt(T / m), so the lowest figure detects the smallest difference per minute.

Runs on one CPU thread (the machine's other core left to other work), side by side in one run;
OUT/retrain_recipe.json holds every number and a markdown table is printed.

    OMP_NUM_THREADS=1 python benchmarks/retrain_recipe.py --seeds 4 --out runs/bench-retrain-recipe
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rampsearch.config import FINAL  # noqa: E402
from rampsearch.machine import cpu_model, matmul_gflops  # noqa: E402
from rampsearch.model_spec import ModelSpec  # noqa: E402
from rampsearch.ramp import RampSchedule  # noqa: E402
from rampsearch.report.stats import detectable_difference, mean_std  # noqa: E402
from rampsearch.search.load import load_space  # noqa: E402
from rampsearch.search.trial import run_trial, train_config  # noqa: E402

THREADS = 1
SEEDS_FOR_DETECTABLE = 4  # the seeds at which each setting's detectable difference is compared
# name -> (what changes, epochs, recipe overrides); the first is the demo's retraining as it stands.
SETTINGS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "demo": ("the demo's retraining: proxy recipe, 3 epochs, 800 val images", 3, {}),
    "unshared": ("as demo, shared_init off (each ramp its own random draw)", 3, {"shared_init": False}),
    "val x3": ("as demo, 2400 val images (synthetic_val_per_class 150)", 3, {"synthetic_val_per_class": 150}),
    "lr 2e-3": ("as demo, lr 2e-3 with 1 warm-up epoch", 3, {"lr": 2e-3, "warmup_epochs": 1}),
    "6 epochs": ("as demo, 6 epochs", 6, {}),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def searched_ramp(path: Path) -> RampSchedule:
    ramps = pd.read_csv(path)
    best = ramps[ramps["schedule"] == "best"].sort_values("block")
    if best.empty:
        raise SystemExit(f"{path} has no 'best' schedule; pass --ramp r1,r2,...")
    return RampSchedule(tuple(best["C_h/C"]))


def summarise(top1: dict[str, list[float]], seconds: list[float]) -> dict[str, Any]:
    a, b = np.asarray(top1["searched"]), np.asarray(top1["handset"])
    sd_paired = float(np.std(a - b, ddof=1))
    sd_unpaired = math.hypot(mean_std(a)[1], mean_std(b)[1])
    minutes = statistics.median(seconds) * 2 / 60  # one paired seed: both schedules
    return {"top1": top1, "mean": {k: float(np.mean(v)) for k, v in top1.items()},
            "std": {k: mean_std(v)[1] for k, v in top1.items()}, "difference": float(np.mean(a - b)),
            "sd_paired": sd_paired, "sd_unpaired": sd_unpaired, "minutes_per_paired_seed": minutes,
            f"detectable_at_{SEEDS_FOR_DETECTABLE}": detectable_difference(sd_paired, SEEDS_FOR_DETECTABLE),
            "merit": sd_paired * math.sqrt(minutes), "seconds": seconds}


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['cpu']}, {report['torch_threads']} thread(s), matmul {report['matmul_gflops']:.1f} GFLOP/s", "",
             "| setting | hand-set top-1 | searched top-1 | Δ | sd paired | sd unpaired | min / paired seed "
             f"| detectable Δ, {SEEDS_FOR_DETECTABLE} seeds | sd paired × √min |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in report["settings"].items():
        lines.append(f"| {name} | {s['mean']['handset']:.2f} ± {s['std']['handset']:.2f} | {s['mean']['searched']:.2f} "
                     f"± {s['std']['searched']:.2f} | {s['difference']:+.2f} | {s['sd_paired']:.2f} | "
                     f"{s['sd_unpaired']:.2f} | {s['minutes_per_paired_seed']:.2f} | "
                     f"{s[f'detectable_at_{SEEDS_FOR_DETECTABLE}']:.2f} | {s['merit']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(THREADS)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/demo_one_shot.yaml")
    parser.add_argument("--ramps-csv", default="reports/demo/ramps.csv", help="the searched ramp: its 'best'")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    parser.add_argument("--out", default="runs/bench-retrain-recipe")
    args = parser.parse_args()
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or args.seeds < 2:
        parser.error(f"unknown settings {unknown} (known: {list(SETTINGS)}); --seeds >= 2")
    space = load_space(args.space)
    schedules = {"handset": None, "searched": searched_ramp(Path(args.ramps_csv))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "cpu": cpu_model(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "matmul_gflops": matmul_gflops(),
        "searched_ramp": list(schedules["searched"].ratios), "seeds": args.seeds, "settings": {}}
    log(f"{report['cpu']}, matmul {report['matmul_gflops']:.1f} GFLOP/s; searched ramp {report['searched_ramp']}")
    for name in names:
        words, epochs, overrides = SETTINGS[name]
        top1: dict[str, list[float]] = {k: [] for k in schedules}
        seconds: list[float] = []
        for seed in range(args.seeds):
            for schedule, ramp in schedules.items():
                spec = ModelSpec.iformer(space.base, ramp, space.img_size)
                config = train_config(space, spec, None, epochs=epochs, recipe=space.retrain.recipe, seed=seed,
                                      overrides={**space.retrain.overrides, **overrides}, data_split=FINAL)
                started = time.perf_counter()
                final = run_trial(config, lambda e, m: None)
                seconds.append(time.perf_counter() - started)
                top1[schedule].append(final["top1"])
                log(f"{name} seed {seed} {schedule}: top-1 {final['top1']:.2f} in {seconds[-1]:.1f} s")
        report["settings"][name] = {"what": words, "epochs": epochs, "overrides": overrides,
                                    **summarise(top1, seconds)}
        (out / "retrain_recipe.json").write_text(json.dumps(report, indent=2))
    print(table(report), flush=True)


if __name__ == "__main__":
    main()
