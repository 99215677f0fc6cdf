"""What `set_grad_checkpointing` saves and costs in a training step (forward + backward) of iFormer models.

For each case the model is measured without and with gradient checkpointing, side by side in one run:

- saved bytes: the activations kept for backward, counted exactly. A `saved_tensors_hooks` pack hook sees
  every tensor autograd saves outside the checkpointed Blocks; a checkpointed Block keeps only its input
  (for the recomputation), recorded by a forward pre-hook. Distinct storages are counted once and
  parameters (held anyway) not at all.
- peak RSS: the step's peak resident memory above the resident memory before it (Linux: VmHWM, reset
  through /proc/self/clear_refs after the model is built), each setting in its own fresh process so
  no memory cached by an earlier step is reused. Allocator caching makes this coarser than the count.
- time: the median of the timed steps, the two settings alternating step by step so drift hits both.

    .venv/bin/python benchmarks/grad_checkpointing.py                  # iFormer-S 224 batch 8, nano 64 batch 64
    .venv/bin/python benchmarks/grad_checkpointing.py --cases nano --steps 3 --json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rampsearch import build_iformer  # noqa: E402
from rampsearch.models.inception_transformer import Block  # noqa: E402

CASES = {  # name: (variant, img_size, batch)
    "small": ("small", 224, 8),
    "nano": ("nano", 64, 64),
}
NUM_CLASSES = 100
MODES = (False, True)  # gradient checkpointing off, on


def _setup(variant: str, img_size: int, batch: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_iformer(variant, img_size=img_size, num_classes=NUM_CLASSES).train()
    return model, torch.randn(batch, 3, img_size, img_size), torch.randint(0, NUM_CLASSES, (batch,))


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter storages a forward keeps for its backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def keep(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        keep(t)
        return t

    checkpointing = any(getattr(m, "grad_checkpointing", False) for m in model.modules())
    hooks = [b.register_forward_pre_hook(lambda _m, args: keep(args[0])) for b in model.modules()
             if checkpointing and isinstance(b, Block)]
    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    for hook in hooks:
        hook.remove()  # before backward: the recomputation calls the Blocks again
    loss.backward()
    return sum(kept.values())


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024


def _peak_rss_child(variant: str, img_size: int, batch: int, checkpointing: bool, threads: int,
                    queue: multiprocessing.Queue) -> None:
    torch.set_num_threads(threads)
    model, x, y = _setup(variant, img_size, batch)
    model.set_grad_checkpointing(checkpointing)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: reset the peak (VmHWM) to the current RSS, forgetting the imports' peak
    before = _peak_rss_bytes()
    train_step(model, x, y)
    queue.put(_peak_rss_bytes() - before)


def peak_rss(variant: str, img_size: int, batch: int, checkpointing: bool) -> int:
    """One step's peak resident memory above the resident memory before it, in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_rss_child,
                            args=(variant, img_size, batch, checkpointing, torch.get_num_threads(), queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def step_times(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int) -> dict[bool, float]:
    """Median seconds per step for each mode, the modes alternating step by step (order flipped every round)."""
    times: dict[bool, list[float]] = {mode: [] for mode in MODES}
    for i in range(warmup + steps):
        for mode in (MODES if i % 2 == 0 else MODES[::-1]):
            model.set_grad_checkpointing(mode)
            t = time.perf_counter()
            train_step(model, x, y)
            if i >= warmup:
                times[mode].append(time.perf_counter() - t)
    return {mode: statistics.median(ts) for mode, ts in times.items()}


def measure(name: str, steps: int, warmup: int, rss: bool) -> dict:
    variant, img_size, batch = CASES[name]
    model, x, y = _setup(variant, img_size, batch)
    row = {"case": name, "variant": variant, "img_size": img_size, "batch": batch}
    for mode in MODES:
        model.set_grad_checkpointing(mode)
        row[f"saved_bytes_{'on' if mode else 'off'}"] = saved_bytes(model, x, y)
    seconds = step_times(model, x, y, steps, warmup)
    row.update(seconds_off=seconds[False], seconds_on=seconds[True])
    if rss:
        row.update(peak_rss_off=peak_rss(variant, img_size, batch, False),
                   peak_rss_on=peak_rss(variant, img_size, batch, True))
    return row


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = [measure(name, args.steps, args.warmup, not args.no_rss) for name in args.cases]
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                          "machine": platform.processor() or platform.machine(), "rows": rows}, indent=2))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.steps} steps per mode\n")
    print("| model | img | batch | saved MiB off | on | on/off | peak RSS MiB off | on | on/off "
          "| s/step off | on | on/off |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rss = (f"{_mib(r['peak_rss_off'])} | {_mib(r['peak_rss_on'])} | {r['peak_rss_on'] / r['peak_rss_off']:.2f}"
               if "peak_rss_off" in r else "- | - | -")
        print(f"| {r['variant']} | {r['img_size']} | {r['batch']} | {_mib(r['saved_bytes_off'])} | "
              f"{_mib(r['saved_bytes_on'])} | {r['saved_bytes_on'] / r['saved_bytes_off']:.3f} | {rss} | "
              f"{r['seconds_off']:.3f} | {r['seconds_on']:.3f} | {r['seconds_on'] / r['seconds_off']:.2f} |")


if __name__ == "__main__":
    main()
