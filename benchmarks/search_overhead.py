"""Per-trial overhead of the search backends: wall time of a search minus the time its trials trained.

Runs the same tiny space (tests/data/tiny_space.yaml: 4 trials of a 5-block iFormer at 32 px) with
the embedded Optuna backend and with Ray Tune on a local one-machine cluster, each `--repeats`
times in fresh directories, and reports the median overhead per trained trial.

    .venv/bin/python benchmarks/search_overhead.py --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from rampsearch.search import SearchOptions, run_search  # noqa: E402
from rampsearch.search.record import TrialRecord  # noqa: E402


def overhead(backend: str, trials: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        outcome = run_search(ROOT / "tests" / "data" / "tiny_space.yaml", Path(tmp) / "run",
                             SearchOptions(trials=trials, study="overhead"), backend,
                             show_progress=False, log=lambda m: None)
        wall = time.perf_counter() - start
        records = [TrialRecord.of(t) for t in outcome.study.get_trials()]
        trained = [r for r in records if r.duration_s is not None]
        training = sum(r.duration_s for r in trained)
    return {"wall_s": wall, "training_s": training, "trials": len(trained),
            "overhead_per_trial_s": (wall - training) / max(len(trained), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    results = {}
    for backend in ("optuna", "ray"):
        runs = [overhead(backend, args.trials) for _ in range(args.repeats)]
        results[backend] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(backend, json.dumps({k: [round(r[k], 2) for r in runs] for k in runs[0]}), file=sys.stderr)
    ratio = results["ray"]["overhead_per_trial_s"] / results["optuna"]["overhead_per_trial_s"]
    print(json.dumps({**results, "ray_over_optuna_overhead": round(ratio, 1)}, indent=2))


if __name__ == "__main__":
    main()
