"""How to run a search (as opposed to what to search, which is the SearchSpace)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchOptions:
    trials: int  # trained trials; over-budget candidates rejected before training do not count
    study: str
    storage: str | None = None  # RDB URL shared by several machines; None: a journal file in the run dir
    workers: int = 1  # optuna: processes on this machine
    address: str | None = None  # ray: "auto" or HOST:PORT of a running cluster; None starts a local one
    cpus_per_trial: float = 1.0  # ray
    gpus_per_trial: float = 0.0  # ray: fractions pack several trials on one GPU
    device: str | None = None  # cpu / cuda; None: cuda when available
