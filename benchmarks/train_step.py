"""Training-step throughput of iFormer models on this machine, against its measured matmul peak.

One step = forward + backward + AdamW on a random batch. Achieved FLOP/s counts 6 FLOPs per
fvcore multiply-add of the forward pass (2 per multiply-add, x3 for forward + backward), the
usual training convention; the peak is the median of large square matmuls in the same dtype.

    .venv/bin/python benchmarks/train_step.py                    # all cases
    .venv/bin/python benchmarks/train_step.py --cases nano --json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rampsearch import build_iformer, estimate_flops  # noqa: E402

CASES = {  # name: (variant, img_size, batch)
    "small": ("small", 224, 16),
    "nano": ("nano", 64, 128),
}


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


def step_throughput(variant: str, img_size: int, batch: int, bf16: bool, compile_: bool,
                    steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = build_iformer(variant, img_size=img_size, num_classes=100)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step_model = torch.compile(model) if compile_ else model
    x, y = torch.randn(batch, 3, img_size, img_size), torch.randint(0, 100, (batch,))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for name in args.cases:
        variant, img, batch = CASES[name]
        train_flops = 6 * estimate_flops(variant, img_size=img, num_classes=100)
        for compile_ in ([False] if args.no_compile else [False, True]):
            for precision in ("fp32", "bf16"):
                t0 = time.perf_counter()
                ips = step_throughput(variant, img, batch, precision == "bf16", compile_, args.steps, args.warmup)
                achieved = ips * train_flops
                rows.append({"model": variant, "img_size": img, "batch": batch, "precision": precision,
                             "mode": "compile" if compile_ else "eager", "img_per_s": round(ips, 2),
                             "gflop_per_s": round(achieved / 1e9, 1),
                             "fraction_of_peak": round(achieved / peaks[precision], 3),
                             "wall_s": round(time.perf_counter() - t0, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__,
              "matmul_peak_gflop_per_s": {k: round(v / 1e9, 1) for k, v in peaks.items()}, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"matmul peak: fp32 {result['matmul_peak_gflop_per_s']['fp32']} GFLOP/s, "
          f"bf16 {result['matmul_peak_gflop_per_s']['bf16']} GFLOP/s ({result['machine']}, torch {torch.__version__})")
    print(f"{'model':<6} {'img':>4} {'batch':>5} {'prec':<5} {'mode':<8} {'img/s':>7} {'GFLOP/s':>8} {'of peak':>7}")
    for r in rows:
        print(f"{r['model']:<6} {r['img_size']:>4} {r['batch']:>5} {r['precision']:<5} {r['mode']:<8} "
              f"{r['img_per_s']:>7} {r['gflop_per_s']:>8} {r['fraction_of_peak']:>7.1%}")


if __name__ == "__main__":
    main()
