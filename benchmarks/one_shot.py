"""One-shot fidelity against its noise ceiling, and the supernet's settings, side by side in one run (issue 20).

1. Supernet A: the space's own supernet, trained and timed.
2. Ramps: a pool of --pool ramps drawn as the supernet's training draws them, deduplicated and kept
   within the FLOPs budget, scored on A by loss; --ramps are chosen from it: the hand-set, the most-conv
   and most-attention (the space's extremes when within budget, else the pool's ramps with the most and
   the fewest high-frequency heads), and the rest at evenly spaced quantiles of A's loss over the pool,
   so they span the supernet's score range.
3. Standalone: each chosen ramp trained with the space's proxy settings over --seeds seeds (0..S-1),
   top-1 and loss on the search split; the hand-set's trainings time "one standalone proxy trial".
4. Supernet variants, each trained like A with one setting changed: B another seed (the supernet's own
   stability), C distillation toggled, D/E the two neighbouring values of random_ramps. For each: Kendall
   tau (95% bootstrap interval over ramps) of its loss and top-1 scores against the standalone mean top-1,
   ties among its scores, their span, and its training time in standalone trials.
5. Scoring settings on A: score_images in {120, 240, all}, bn_images in {32, 128, 256}, one at a time.
6. The noise ceiling: split-half reliability of the standalone seed means, the tau ceiling it implies,
   and tau between standalone seeds.

Sign convention: a positive tau is agreement (a supernet ranks by -loss, or by top-1, against the
standalone mean top-1, higher better). Everything runs on one CPU thread (torch.set_num_threads(1)),
leaving the machine's other cores to other work; OUT/one_shot.json holds every number, and a markdown
summary is printed.

    OMP_NUM_THREADS=1 python benchmarks/one_shot.py --space search_spaces/demo_one_shot.yaml \\
        --ramps 16 --seeds 3 --pool 300 --out runs/bench-one-shot
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rampsearch.architecture import Architecture  # noqa: E402
from rampsearch.machine import cpu_model, matmul_gflops  # noqa: E402
from rampsearch.model_spec import ModelSpec  # noqa: E402
from rampsearch.ramp import RampSchedule  # noqa: E402
from rampsearch.report.stats import (kendall_tau, split_half_reliability, tau_bootstrap_ci,  # noqa: E402
                                     tau_ceiling)
from rampsearch.search.load import load_space  # noqa: E402
from rampsearch.search.methods.one_shot import ALL_IMAGES, Scorer, make_scorer, train_supernet  # noqa: E402
from rampsearch.search.space import Candidate, SearchSpace  # noqa: E402
from rampsearch.search.trial import run_trial, train_config  # noqa: E402

THREADS = 1  # one core for this run; the machine's other core belongs to someone else's work
POOL_SEED = 1  # random.Random seed of the pool draw (as the supernet's training draws ramps)
BOOTSTRAP = 2000  # resamples of the ramps for every tau interval
DISTINCT_DECIMALS = 6  # scores equal to this many decimals count as one value (ties)
SCORE_IMAGES_GRID = (120, 240, ALL_IMAGES)  # scoring-set sizes compared on supernet A
BN_IMAGES_GRID = (32, 128, 256)  # BatchNorm re-estimation sizes compared on supernet A
ALL_VARIANTS = "ABCDE"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- supernets --------------------------------------------------------------------------------------------
def random_ramps_neighbours(value: int) -> tuple[int, int]:
    """The two other values of three consecutive random_ramps around `value` (never below 0)."""
    low = max(0, value - 1)
    others = [v for v in (low, low + 1, low + 2) if v != value]
    return others[0], others[1]


def variant_spaces(space: SearchSpace, letters: str) -> dict[str, tuple[str, SearchSpace]]:
    """Supernet variants by letter: (what differs from A, the space that trains it)."""
    settings, search = space.supernet, space.search
    fewer, more = random_ramps_neighbours(settings.random_ramps)

    def with_supernet(**changes: Any) -> SearchSpace:
        return dataclasses.replace(space, supernet=dataclasses.replace(settings, **changes))

    every = {
        "A": (f"the space's (seed {search.seed}, distill {str(settings.distill).lower()}, "
              f"random_ramps {settings.random_ramps})", space),
        "B": (f"seed {search.seed + 1}",
              dataclasses.replace(space, search=dataclasses.replace(search, seed=search.seed + 1))),
        "C": (f"distill: {str(not settings.distill).lower()}", with_supernet(distill=not settings.distill)),
        "D": (f"random_ramps: {fewer}", with_supernet(random_ramps=fewer)),
        "E": (f"random_ramps: {more}", with_supernet(random_ramps=more)),
    }
    return {letter: every[letter] for letter in letters}


def train_timed(space: SearchSpace, folder: Path) -> tuple[float, dict[str, float]]:
    """Train the space's supernet in `folder`: (its training seconds, its final metrics on the hand-set
    sub-network). The seconds are the run's own record (resumed sessions included), so a supernet a
    resumed benchmark finds finished keeps the time it took."""
    result = train_supernet(space, folder, quiet=True)
    return result.seconds, dict(result.final)


def score_all(scorer: Scorer, candidates: list[Candidate]) -> list[dict[str, float]]:
    """Each candidate's loss, top-1 and scoring seconds on `scorer`."""
    rows = []
    for candidate in candidates:
        scored = scorer.score(candidate)
        rows.append({"loss": scored.metrics["loss"], "top1": scored.metrics["top1"], "seconds": scored.seconds})
    return rows


# -- the ramps --------------------------------------------------------------------------------------------
def draw_pool(space: SearchSpace, size: int) -> tuple[list[Candidate], dict[str, int]]:
    """`size` draws as the supernet's training draws them: the distinct, within-budget ones, and counts."""
    spec, rng = space.supernet_spec(), random.Random(POOL_SEED)
    distinct: dict[Any, Candidate] = {}
    for _ in range(size):
        sub = spec.sample(rng)
        candidate = space.candidate(sub.arch, sub.ramp)
        distinct.setdefault(candidate.key, candidate)
    feasible = [c for c in distinct.values() if c.feasible]
    return feasible, {"drawn": size, "distinct": len(distinct), "within_budget": len(feasible)}


def high_heads(candidate: Candidate) -> int:
    return sum(candidate.ramp.high_heads(candidate.arch))


def choose_ramps(space: SearchSpace, pool: list[Candidate], pool_loss: list[float],
                 count: int) -> list[tuple[str, Candidate]]:
    """The hand-set, the most-conv and most-attention within budget, and the rest at evenly spaced
    quantiles of the pool's supernet loss (nearest unused pool ramp when two quantiles meet)."""
    handset = space.handset()
    conv, attention = (space.candidate(s.arch, s.ramp) for s in space.supernet_spec().extremes())
    chosen = [("hand-set", handset)]
    chosen.append(("most-conv", conv) if conv.feasible else ("most-conv (pool)", max(pool, key=high_heads)))
    chosen.append(("most-attention", attention) if attention.feasible
                  else ("most-attention (pool)", min(pool, key=high_heads)))
    used = {c.key for _, c in chosen}
    order = sorted(range(len(pool)), key=lambda i: pool_loss[i])
    order = [i for i in order if pool[i].key not in used]
    wanted = count - len(chosen)
    if wanted > len(order):
        raise SystemExit(f"the pool has {len(order)} usable ramps, fewer than the {wanted} wanted; raise --pool")
    taken: set[int] = set()
    for q in range(wanted):
        target = round(q * (len(order) - 1) / max(wanted - 1, 1))
        position = min((p for p in range(len(order)) if p not in taken), key=lambda p: (abs(p - target), p))
        taken.add(position)
        chosen.append((f"q{q / max(wanted - 1, 1):.2f}", pool[order[position]]))
    return chosen


# -- standalone trainings ---------------------------------------------------------------------------------
def train_standalone(space: SearchSpace, ramps: list[tuple[str, Candidate]], seeds: int,
                     save: Callable[[dict[str, Any]], None], earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every ramp with the space's proxy settings over seeds 0..seeds-1: top-1 and loss on the search split.
    Trainings `earlier` (a saved partial result) holds are kept, not retrained; `save` gets every new one."""
    top1 = [[None] * seeds for _ in ramps]
    loss = [[None] * seeds for _ in ramps]
    handset_seconds = list(earlier["handset_seconds"]) if earlier else []
    total, done, started = len(ramps) * seeds, 0, time.perf_counter()
    for seed in range(seeds):  # seed-major: an early stop still leaves every ramp with the first seeds
        for r, (name, candidate) in enumerate(ramps):
            done += 1
            if earlier and earlier["top1"][r][seed] is not None:
                top1[r][seed], loss[r][seed] = earlier["top1"][r][seed], earlier["loss"][r][seed]
                continue
            spec = ModelSpec.iformer(candidate.arch, candidate.ramp, space.img_size)
            t = time.perf_counter()
            final = run_trial(train_config(space, spec, None, seed=seed), lambda e, m: None)
            seconds = time.perf_counter() - t
            top1[r][seed], loss[r][seed] = final["top1"], final["loss"]
            if candidate.handset:
                handset_seconds.append(seconds)
            log(f"standalone {done}/{total}: {name} seed {seed}: top-1 {final['top1']:.2f} loss "
                f"{final['loss']:.4f} in {seconds:.1f} s (elapsed {time.perf_counter() - started:.0f} s)")
            save({"top1": top1, "loss": loss, "handset_seconds": handset_seconds})
    return {"top1": top1, "loss": loss, "handset_seconds": handset_seconds,
            "trial_s": statistics.median(handset_seconds)}


# -- agreement --------------------------------------------------------------------------------------------
def distinct(values: list[float]) -> int:
    return len({round(v, DISTINCT_DECIMALS) for v in values})


def tau_entry(values: list[float], reference: list[float]) -> dict[str, Any]:
    """Kendall tau of `values` against `reference`, its p-value and 95% bootstrap interval over ramps."""
    tau, p = kendall_tau(values, reference)
    return {"tau": tau, "p": p, "ci95": list(tau_bootstrap_ci(values, reference, BOOTSTRAP))}


def agreement(scores: list[dict[str, float]], reference: list[float]) -> dict[str, Any]:
    """Tau (positive: agreement) of -loss and of top-1 against `reference` (higher better), with intervals,
    and how many distinct values each score has and their span."""
    out: dict[str, Any] = {}
    for name, values in (("loss", [-s["loss"] for s in scores]), ("top1", [s["top1"] for s in scores])):
        out[name] = {**tau_entry(values, reference), "distinct": distinct(values), "span": max(values) - min(values)}
    return out


def seed_vs_seed_tau(matrix: list[list[float]]) -> dict[str, Any]:
    """Kendall tau between every pair of standalone seeds (columns) across ramps, and their mean."""
    columns = np.asarray(matrix, dtype=float).T
    pairs = {f"{i}-{j}": kendall_tau(columns[i], columns[j])[0]
             for i, j in itertools.combinations(range(len(columns)), 2)}
    return {"pairs": pairs, "mean": float(np.nanmean(list(pairs.values())))}


def ceiling_interval(matrix: list[list[float]], seed: int = 0) -> list[float]:
    """95% percentile bootstrap (ramps resampled) of the tau ceiling of `matrix` [ramps x seeds]."""
    data, rng, ceilings = np.asarray(matrix, dtype=float), np.random.default_rng(seed), []
    for _ in range(BOOTSTRAP):
        sample = data[rng.integers(0, len(data), len(data))]
        reliability = split_half_reliability(sample)
        if not np.isnan(reliability):
            ceilings.append(tau_ceiling(reliability))
    return [float(v) for v in np.percentile(ceilings, [2.5, 97.5])] if ceilings else [float("nan")] * 2


def noise_ceiling(standalone: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for metric in ("top1", "loss"):
        matrix = standalone[metric]
        reliability = split_half_reliability(matrix)
        out[metric] = {"split_half_reliability": reliability, "tau_ceiling": tau_ceiling(reliability),
                       "tau_ceiling_ci95": ceiling_interval(matrix), "seed_vs_seed_tau": seed_vs_seed_tau(matrix)}
    return out


# -- scoring settings -------------------------------------------------------------------------------------
def scoring_settings(space: SearchSpace, folder: Path, candidates: list[Candidate],
                     reference: list[float]) -> list[dict[str, Any]]:
    """Supernet A scored with each score_images and each bn_images (one varied at a time)."""
    settings = space.supernet
    grid = [(n, settings.bn_images) for n in SCORE_IMAGES_GRID]
    grid += [(settings.score_images, n) for n in BN_IMAGES_GRID if n != settings.bn_images]
    rows = []
    for score_images, bn_images in grid:
        varied = dataclasses.replace(space, supernet=dataclasses.replace(settings, bn_images=bn_images))
        scorer = make_scorer(varied, folder, score_images=score_images)
        scores = score_all(scorer, candidates)
        rows.append({"score_images": scorer.images, "bn_images": bn_images,
                     "seconds_median": statistics.median(s["seconds"] for s in scores),
                     "scores": scores, **agreement(scores, reference)})
        log(f"scoring {scorer.images} images, bn {bn_images}: tau loss {rows[-1]['loss']['tau']:+.3f} "
            f"top-1 {rows[-1]['top1']['tau']:+.3f}, {rows[-1]['seconds_median']:.2f} s per candidate")
    return rows


# -- output -----------------------------------------------------------------------------------------------
def fmt_tau(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{entry['tau']:+.2f} [{low:+.2f}, {high:+.2f}]"


def summary(report: dict[str, Any]) -> str:
    trial = report["standalone"]["trial_s"]
    trials = len(report["standalone"]["handset_seconds"])
    lines = [f"one standalone proxy trial (hand-set, median of {trials}): {trial:.1f} s at "
             f"{report['torch_threads']} thread(s); matmul {report['matmul_gflops']:.1f} GFLOP/s", "",
             "| supernet | setting | tau loss [95% CI] | tau top-1 [95% CI] | distinct loss / top-1 "
             "| span loss / top-1 "
             "| train s | x trial |", "|---|---|---|---|---|---|---:|---:|"]
    for letter, v in report["variants"].items():
        lines.append(f"| {letter} | {v['setting']} | {fmt_tau(v['loss'])} | {fmt_tau(v['top1'])} | "
                     f"{v['loss']['distinct']} / {v['top1']['distinct']} | {v['loss']['span']:.4f} / "
                     f"{v['top1']['span']:.2f} | {v['train_s']:.0f} | {v['train_s'] / trial:.1f} |")
    lines += ["", "| score_images | bn_images | tau loss | tau top-1 | s per candidate |", "|---:|---:|---|---|---:|"]
    for row in report.get("scoring_settings", []):
        lines.append(f"| {row['score_images']} | {row['bn_images']} | {fmt_tau(row['loss'])} | {fmt_tau(row['top1'])} "
                     f"| {row['seconds_median']:.2f} |")
    lines += ["", "| standalone metric | split-half reliability | tau ceiling [95% CI] | mean seed-vs-seed tau |",
              "|---|---:|---|---:|"]
    for metric, c in report.get("noise_ceiling", {}).items():
        low, high = c["tau_ceiling_ci95"]
        lines.append(f"| {metric} | {c['split_half_reliability']:.3f} | {c['tau_ceiling']:.2f} [{low:.2f}, {high:.2f}] "
                     f"| {c['seed_vs_seed_tau']['mean']:+.2f} |")
    if "A_vs_B" in report:
        ab = report["A_vs_B"]
        lines += ["", f"supernet A vs B on the {len(report['ramps'])} ramps: tau loss {fmt_tau(ab['loss'])}, "
                      f"top-1 {fmt_tau(ab['top1'])}"]
    return "\n".join(lines)


def resumable(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The saved report in `out`, if it was made with the same space, ramps, seeds and pool."""
    path = out / "one_shot.json"
    if not path.is_file():
        raise SystemExit(f"--resume: {path} does not exist; run without --resume to start")
    earlier = json.loads(path.read_text())
    if "variants" in earlier:
        raise SystemExit(f"--resume: {path} is a finished run; run without --resume to start again")
    wanted = {"space": args.space, "ramps": args.ramps, "seeds": args.seeds, "pool": args.pool}
    then = {"space": earlier["space"], **{k: earlier["settings"][k] for k in ("ramps", "seeds", "pool")}}
    if then != wanted:
        raise SystemExit(f"--resume: {path} was made with {then}, not {wanted}")
    return earlier


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(THREADS)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/demo_one_shot.yaml")
    parser.add_argument("--ramps", type=int, default=16, help="ramps compared (at least 4)")
    parser.add_argument("--seeds", type=int, default=3, help="standalone seeds per ramp (at least 2)")
    parser.add_argument("--pool", type=int, default=300, help="draws of the pool the ramps are chosen from")
    parser.add_argument("--out", default="runs/bench-one-shot")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS), help="supernets to train, A required")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out: keep its ramps, trained supernets and finished seeds")
    args = parser.parse_args()
    letters = "".join(sorted({v.strip().upper() for v in args.variants.split(",") if v.strip()}))
    if "A" not in letters or set(letters) - set(ALL_VARIANTS) or args.ramps < 4 or args.seeds < 2:
        parser.error("--variants must include A (of A-E), --ramps >= 4 and --seeds >= 2")
    out = Path(args.out)
    space = load_space(args.space)
    if args.resume:
        earlier = resumable(out, args)
    else:
        earlier = {}
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "space": args.space, "cpu": cpu_model(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "matmul_gflops": matmul_gflops(),
        "note": f"{THREADS} torch thread(s); the machine's other cores were left to other work",
        "standalone_scored_on": "the whole search split (train.fit's final metrics, data_split search)",
        "settings": {"supernet": dataclasses.asdict(space.supernet), "proxy_epochs": space.proxy.epochs,
                     "search_seed": space.search.seed, "ramps": args.ramps, "seeds": args.seeds, "pool": args.pool},
    }

    def save() -> None:
        (out / "one_shot.json").write_text(json.dumps(report, indent=2))

    log(f"{report['cpu']}, {report['torch_threads']} thread(s), matmul {report['matmul_gflops']:.1f} GFLOP/s")
    if earlier:
        report["resumed"] = {"from": earlier["date"], "matmul_gflops_then": earlier["matmul_gflops"]}
    variants = variant_spaces(space, letters)
    supernets: dict[str, dict[str, Any]] = dict(earlier.get("supernets", {}))
    scorer_a = None
    if "A" in supernets:
        ramps = [(r["name"], space.candidate(Architecture.from_dict(r["architecture"]), RampSchedule(r["ramp"]),
                                             handset=r["name"] == "hand-set")) for r in earlier["ramps"]]
        report["pool"], report["ramps"] = earlier["pool"], earlier["ramps"]
        if "standalone" in earlier:
            report["standalone"] = earlier["standalone"]
        log(f"kept from the earlier run: the {len(ramps)} ramps and supernet(s) {', '.join(supernets)}")
    else:
        train_s, final = train_timed(space, out / "supernet-A")
        log(f"supernet A trained in {train_s:.0f} s (hand-set top-1 {final['top1']:.2f})")
        trained_a = train_s, final
        pool, counts = draw_pool(space, args.pool)
        scorer_a = make_scorer(space, out / "supernet-A")
        pool_scores = score_all(scorer_a, pool)
        log(f"pool: {counts}, scored on A in {sum(s['seconds'] for s in pool_scores):.0f} s")
        ramps = choose_ramps(space, pool, [s["loss"] for s in pool_scores], args.ramps)
        report["pool"] = {**counts, "loss": [s["loss"] for s in pool_scores],
                          "top1": [s["top1"] for s in pool_scores],
                          "score_s_median": statistics.median(s["seconds"] for s in pool_scores)}
        report["ramps"] = [{"name": n, "ramp": list(c.ramp.ratios), "architecture": c.arch.to_dict(),
                            "gflops": c.flops / 1e9, "feasible": c.feasible} for n, c in ramps]
    candidates = [c for _, c in ramps]
    save()

    # Every supernet first (a failing setting shows within minutes), then the long standalone trainings.
    report["supernets"] = supernets
    for letter, (setting, variant) in variants.items():
        if letter in supernets:
            continue
        if letter == "A":
            train_s, final = trained_a
        else:
            train_s, final = train_timed(variant, out / f"supernet-{letter}")
            log(f"supernet {letter} ({setting}) trained in {train_s:.0f} s (hand-set top-1 {final['top1']:.2f})")
        scorer = scorer_a if letter == "A" else make_scorer(variant, out / f"supernet-{letter}")
        supernets[letter] = {"setting": setting, "train_s": train_s, "handset_final": final,
                             "scores": score_all(scorer, candidates)}
        report["supernets"] = supernets
        save()
    if "B" in supernets:
        a, b = supernets["A"]["scores"], supernets["B"]["scores"]
        report["A_vs_B"] = {metric: tau_entry([s[metric] for s in a], [s[metric] for s in b])
                            for metric in ("loss", "top1")}

    def save_standalone(partial: dict[str, Any]) -> None:
        report["standalone"] = partial
        save()

    standalone = train_standalone(space, ramps, args.seeds, save_standalone, earlier.get("standalone"))
    report["standalone"] = standalone
    reference = [statistics.fmean(seeds) for seeds in standalone["top1"]]
    standalone_loss = [statistics.fmean(seeds) for seeds in standalone["loss"]]
    report["standalone"]["mean_top1"] = reference
    report["noise_ceiling"] = noise_ceiling(standalone)
    save()

    report["variants"] = {}
    for letter, trained in supernets.items():
        scores = trained["scores"]
        report["variants"][letter] = entry = {
            **trained, "train_vs_trial": trained["train_s"] / standalone["trial_s"], **agreement(scores, reference),
            "tau_loss_vs_standalone_loss": kendall_tau([s["loss"] for s in scores], standalone_loss)[0],
            "score_s_median": statistics.median(s["seconds"] for s in scores)}
        log(f"supernet {letter}: tau loss {fmt_tau(entry['loss'])}, top-1 {fmt_tau(entry['top1'])}, "
            f"{entry['train_vs_trial']:.1f}x a trial")
    report.pop("supernets")
    save()

    report["scoring_settings"] = scoring_settings(space, out / "supernet-A", candidates, reference)
    save()
    print(summary(report), flush=True)


if __name__ == "__main__":
    main()
