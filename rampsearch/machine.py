"""What machine a figure was measured on: the CPU's model and its fp32 matmul speed.

Figures in BENCHMARKS.md and in reports are only comparable as ratios measured on one machine; these
two numbers say which machine that was (a 2-core AVX-512 CPU and an AVX2 one differ about 2.7x in fp32).
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

MATMUL_SIZE = 2048  # n of the n x n fp32 matmul: large enough to run at the machine's peak, small enough for a second
MATMUL_REPEATS = 7  # timed matmuls after one warm-up; the median is reported


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def matmul_gflops() -> float:
    """This machine's fp32 matmul GFLOP/s at torch's current thread count (median of MATMUL_REPEATS)."""
    import torch

    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b  # warm-up
    times = []
    for _ in range(MATMUL_REPEATS):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * MATMUL_SIZE ** 3 / statistics.median(times) / 1e9
