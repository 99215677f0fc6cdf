"""How many of a search's proposals were wasted, and how good its best candidate was after k scored, for
runs side by side (e.g. the same one-shot search before and after the distinct sampler).

Reads only each run directory's trials.csv, so it compares runs made by any version of rampsearch:

    python cli.py search search_spaces/demo_one_shot.yaml --supernet SUPERNET --trials 100 --out runs/new
    python benchmarks/sampler_repeats.py runs/old runs/new --at 25 50 100

Per run: proposals (every trial), scored (trained or scored candidates: COMPLETE), repeats (DUPLICATE:
a candidate scored before, answered or rejected), over budget, and the best search-split loss and
top-1 among the first k scored candidates (by trial number; the hand-set ramp included), whatever
the run ranked by.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def summarize(run_dir: Path, at: list[int]) -> dict:
    trials = pd.read_csv(run_dir / "trials.csv").sort_values("number")
    scored = trials[trials["state"] == "COMPLETE"]
    repeats = int((trials["state"] == "DUPLICATE").sum())
    out = {"run": str(run_dir), "proposals": len(trials), "scored": len(scored), "repeats": repeats,
           "repeat_share": repeats / len(trials), "over_budget": int((trials["state"] == "OVER_BUDGET").sum()),
           "distinct_ramps_scored": int(scored["ramp"].nunique())}
    for k in at:
        first = scored.head(k)
        if len(first) == k:
            out[f"best_loss_at_{k}"] = float(first["loss_e1"].min())
            out[f"best_top1_at_{k}"] = float(first["top1_e1"].max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding trials.csv")
    parser.add_argument("--at", nargs="+", type=int, default=[25, 50, 100], help="scored-candidate counts")
    args = parser.parse_args()
    rows = [summarize(run, args.at) for run in args.runs]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
