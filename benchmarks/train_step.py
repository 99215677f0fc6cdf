"""Training-step throughput of iFormer models on this machine, against its measured matmul peak.

One step = forward + backward + AdamW on a random batch. Achieved FLOP/s counts 6 FLOPs per
fvcore multiply-add of the forward pass (2 per multiply-add, x3 for forward + backward), the
usual training convention; the peak is the median of large square matmuls in the same dtype.

    .venv/bin/python benchmarks/train_step.py                    # all cases
    .venv/bin/python benchmarks/train_step.py --cases nano --json
    python benchmarks/train_step.py --device cuda --batches 64 128 256 --precisions bf16   # a GPU

On a GPU the model is channels_last, AdamW is fused, attention goes through PyTorch's fused
scaled_dot_product_attention (the model's own), and every timed step ends with a synchronize.
"""
from __future__ import annotations

import argparse
import itertools
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


def matmul_peak(dtype: torch.dtype, device: str = "cpu", repeats: int = 5) -> float:
    n = 8192 if device.startswith("cuda") else 4096  # a GPU needs a larger product to reach its peak
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_throughput(variant: str, img_size: int, batch: int, bf16: bool, compile_: bool,
                    steps: int, warmup: int, device: str = "cpu") -> float:
    torch.manual_seed(0)
    gpu = device.startswith("cuda")
    model = build_iformer(variant, img_size=img_size, num_classes=100).to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=gpu)
    step_model = torch.compile(model) if compile_ else model
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    if gpu:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (batch,), device=device)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else nullcontext()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def profile(variant: str, img_size: int, batch: int, bf16: bool, device: str) -> None:
    """torch.profiler over 3 eager steps (after 2 unprofiled ones): the 20 operators with the most self time,
    on stderr: what limits the step (matmuls, depthwise convolutions, attention, copies, the host)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    step_throughput(variant, img_size, batch, bf16, False, 1, 1, device)
    with torch_profile(activities=activities) as prof:
        step_throughput(variant, img_size, batch, bf16, False, 3, 0, device)
    sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=20), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batches", type=int, nargs="+", help="batch sizes (default: each case's own)")
    parser.add_argument("--img-size", type=int, help="input size (default: each case's own)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--profile", action="store_true",
                        help="after timing, profile 3 steps of the first setting and print the top operators")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    peaks = {p: matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16, args.device) for p in args.precisions}
    rows = []
    for name in args.cases:
        variant, img, default_batch = CASES[name]
        img = args.img_size or img
        train_flops = 6 * estimate_flops(variant, img_size=img, num_classes=100)
        for batch, compile_, precision in itertools.product(args.batches or [default_batch],
                                                             [False] if args.no_compile else [False, True],
                                                             args.precisions):
            t0 = time.perf_counter()
            ips = step_throughput(variant, img, batch, precision == "bf16", compile_, args.steps, args.warmup,
                                  args.device)
            achieved = ips * train_flops
            rows.append({"model": variant, "img_size": img, "batch": batch, "precision": precision,
                         "mode": "compile" if compile_ else "eager", "img_per_s": round(ips, 2),
                         "gflop_per_s": round(achieved / 1e9, 1),
                         "fraction_of_peak": round(achieved / peaks[precision], 3),
                         "wall_s": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.profile:
        variant, img, default_batch = CASES[args.cases[0]]
        profile(variant, args.img_size or img, (args.batches or [default_batch])[0], args.precisions[-1] == "bf16",
                args.device)
    machine = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    result = {"machine": machine, "device": args.device,
              "torch": torch.__version__,
              "matmul_peak_gflop_per_s": {k: round(v / 1e9, 1) for k, v in peaks.items()}, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    peak_words = ", ".join(f"{k} {v} GFLOP/s" for k, v in result["matmul_peak_gflop_per_s"].items())
    print(f"matmul peak: {peak_words} ({result['machine']}, torch {torch.__version__})")
    print(f"{'model':<6} {'img':>4} {'batch':>5} {'prec':<5} {'mode':<8} {'img/s':>7} {'GFLOP/s':>8} {'of peak':>7}")
    for r in rows:
        print(f"{r['model']:<6} {r['img_size']:>4} {r['batch']:>5} {r['precision']:<5} {r['mode']:<8} "
              f"{r['img_per_s']:>7} {r['gflop_per_s']:>8} {r['fraction_of_peak']:>7.1%}")


if __name__ == "__main__":
    main()
