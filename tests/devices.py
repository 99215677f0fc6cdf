"""The device that device-independent tests train on: the CPU, unless RAMPSEARCH_TEST_DEVICE names another
(`cuda`, `cuda:1`). The GPU suite (benchmarks/gpu_suite.py) runs these tests with it set to cuda; CI never
sets it. A test that checks a literal config value or a CLI default keeps its own "cpu"."""
from __future__ import annotations

import os

TEST_DEVICE = os.environ.get("RAMPSEARCH_TEST_DEVICE") or "cpu"
