"""Shared test set-up: deterministic CPU, a small architecture, and where the reference data lives."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise from fvcore/timm imports

# The official checkpoints' key listings ship beside the repo in ../shared/reference.
REFERENCE_DIR = Path(os.environ.get("RAMPSEARCH_REFERENCE_DIR",
                                    Path(__file__).resolve().parents[2] / "shared" / "reference"))


@pytest.fixture(autouse=True, scope="session")
def _proxy_cache_dir(tmp_path_factory):
    """Decoded proxy caches of test folders go to a temporary folder, never into the user's ~/.cache
    (subprocesses inherit it)."""
    os.environ["RAMPSEARCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("proxy-cache"))
    yield


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    # at most 2 threads, fewer where OMP_NUM_THREADS says so (a benchmark running beside the tests)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1, int(os.environ.get("OMP_NUM_THREADS") or 2))))
    yield


@pytest.fixture
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "iformer_small_checkpoint_keys.tsv").is_file():
        pytest.skip(f"official checkpoint key listings not found in {REFERENCE_DIR} "
                    "(set RAMPSEARCH_REFERENCE_DIR to the folder holding iformer_*_checkpoint_keys.tsv)")
    return REFERENCE_DIR
