"""One-shot search, measured against standalone proxy trainings, side by side in one run.

Fidelity: the space's supernet scores N ramps (the hand-set, the most-conv and the most-attention ramps
of the space, and N-3 drawn as the supernet's training draws them); the same N train standalone with
the space's proxy settings over --seeds seeds, all on the search split. Kendall τ between the supernet
scores and the standalone means, with a 95% bootstrap interval over ramps.

Speed: supernet training, scoring one candidate and a whole one-shot search of --candidates candidates
(on the supernet trained here), each as a multiple of one standalone proxy trial of the hand-set ramp.

    python benchmarks/one_shot.py --space search_spaces/demo_one_shot.yaml --ramps 8 --seeds 2 --candidates 200
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rampsearch.report.stats import kendall_tau  # noqa: E402
from rampsearch.search import SearchOptions, run_search  # noqa: E402
from rampsearch.search.one_shot import make_scorer, train_supernet  # noqa: E402
from rampsearch.search.space import load_space  # noqa: E402
from rampsearch.search.trial import run_trial, train_config  # noqa: E402
from rampsearch.model_spec import ModelSpec  # noqa: E402
from rampsearch.supernet import Subnet  # noqa: E402

BOOTSTRAP = 2000  # resamples of the ramps for τ's interval


def _bootstrap_tau(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(a), len(a))
        tau, _ = kendall_tau([a[i] for i in idx], [b[i] for i in idx])
        if not np.isnan(tau):
            taus.append(tau)
    return float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/demo_one_shot.yaml")
    parser.add_argument("--ramps", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--out", default="runs/bench-one-shot")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    space = load_space(args.space)
    spec = space.supernet_spec()

    started = time.perf_counter()
    supernet_result = train_supernet(space, out / "supernet", quiet=True)
    supernet_s = time.perf_counter() - started

    handset = space.handset()
    conv, attention = spec.extremes()
    rng = random.Random(1)
    subs = [("handset", Subnet(handset.arch, handset.ramp)), ("most-conv", conv), ("most-attention", attention)]
    subs += [(f"random{i}", spec.sample(rng)) for i in range(args.ramps - 3)]

    scorer = make_scorer(space, out / "supernet")
    supernet_scores, score_s = [], []
    for _, sub in subs:
        result = scorer.score(space.candidate(sub.arch, sub.ramp))
        supernet_scores.append(result["top1"])
        score_s.append(result["seconds"])

    standalone, trial_s = [], []
    for name, sub in subs:
        scores = []
        for seed in range(args.seeds):
            spec_ = ModelSpec.iformer(sub.arch, sub.ramp, space.img_size)
            t = time.perf_counter()
            scores.append(run_trial(train_config(space, spec_, None, seed=seed), lambda e, m: None)["top1"])
            if name == "handset":
                trial_s.append(time.perf_counter() - t)
        standalone.append(scores)
        print(f"{name}: supernet {supernet_scores[len(standalone) - 1]:.2f}%  standalone {scores}", flush=True)
    means = [statistics.fmean(s) for s in standalone]
    tau, p = kendall_tau(supernet_scores, means)
    low, high = _bootstrap_tau(supernet_scores, means)
    # seed-to-seed agreement of the standalone trainings themselves: the ceiling any proxy can reach
    seed_tau = kendall_tau([s[0] for s in standalone], [s[1] for s in standalone])[0] if args.seeds > 1 else None

    options = SearchOptions(trials=args.candidates, study="bench", method="one-shot", supernet=str(out / "supernet"))
    t = time.perf_counter()
    outcome = run_search(args.space, out / "search", options, show_progress=False, log=lambda m: None)
    search_s = time.perf_counter() - t
    trial = statistics.median(trial_s)
    report = {
        "space": args.space, "ramps": [n for n, _ in subs], "supernet_top1": supernet_scores,
        "standalone_top1": standalone, "kendall_tau": tau, "p": p, "tau_ci95": [low, high],
        "seed_vs_seed_tau": seed_tau, "standalone_trial_s": trial, "supernet_train_s": supernet_s,
        "supernet_handset_top1": supernet_result.final["top1"],
        "score_s_median": statistics.median(score_s), "search_scoring_s": search_s,
        "candidates_scored": outcome.counts["done"], "candidates_per_hour": 3600 * outcome.counts["done"] / search_s,
        "ratios": {"supernet_training_vs_trial": supernet_s / trial, "trial_vs_score": trial / statistics.median(score_s),
                   "whole_search_vs_trial": (supernet_s + search_s) / trial},
    }
    (out / "one_shot.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
