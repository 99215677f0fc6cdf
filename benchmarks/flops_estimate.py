"""How fast a search can check its FLOPs budget: closed form vs tracing with fvcore.

    .venv/bin/python benchmarks/flops_estimate.py [--json]

Runs on one thread. Reports the median of 5 repeats of each measurement.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rampsearch import Architecture, RampSchedule, build_iformer, count_flops, estimate_flops  # noqa: E402
from rampsearch.flops import flops_model  # noqa: E402
from rampsearch.search.load import load_space  # noqa: E402


def rate(fn, n: int, repeats: int = 5) -> float:
    """Calls per second of fn(i) for i in range(n), median over repeats."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    arch = Architecture.resolve("small")
    rng = np.random.default_rng(0)
    units = np.array(arch.block_widths) // arch.head_dim
    heads = rng.integers(0, units + 1, size=(10_000, arch.num_blocks))
    ramps = [RampSchedule.from_high_heads(arch, row) for row in heads[:2000]]
    model = flops_model(arch)
    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "iformer_s_ramp.yaml")
    results = {
        "FlopsModel.of_many (vectorised, per schedule)": 10_000 / statistics.median(
            [(lambda t: (model.of_many(heads), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5)]),
        "FlopsModel.of_heads": rate(lambda i: model.of_heads(heads[i]), 10_000),
        "FlopsModel.of (validates the ramp)": rate(lambda i: model.of(ramps[i]), 2000),
        "SearchSpace.candidate (FLOPs + params + budget)": rate(
            lambda i: space.candidate(arch, ramps[i]), 2000),
        "estimate_flops (public API, ratios in)": rate(lambda i: estimate_flops("small", ramp=ramps[i]), 2000),
    }
    small = build_iformer("small")
    t = time.perf_counter()
    count_flops(small)
    results["count_flops (fvcore trace of iFormer-S)"] = 1 / (time.perf_counter() - t)
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in results.items()}, indent=2))
        return
    trace = results["count_flops (fvcore trace of iFormer-S)"]
    print(f"{'method':<52} {'checks/s':>12} {'vs fvcore':>10}")
    for name, value in results.items():
        print(f"{name:<52} {value:>12,.0f} {value / trace:>9,.0f}x")


if __name__ == "__main__":
    main()
