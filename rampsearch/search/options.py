"""How to run a search (as opposed to what to search, which is the SearchSpace)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SearchOptions:
    trials: int  # trials that count: trained ones; over-budget and interrupted candidates do not count
    study: str
    storage: str | None = None  # RDB URL shared by several machines; None: a journal file in the run dir
    workers: int = 1  # optuna: processes on this machine
    address: str | None = None  # ray: "auto" or HOST:PORT of a running cluster; None starts a local one
    cpus_per_trial: float = 1.0  # ray
    gpus_per_trial: float = 0.0  # ray: fractions pack several trials on one GPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    overrides: dict[str, Any] = field(default_factory=dict)  # --set: recipe keys over the space's proxy.overrides
    keep_checkpoints: bool = False  # keep each finished trial's resume state
    method: str | None = None  # train | one-shot; None: the space's `method`
    supernet: str | None = None  # one-shot: a trained supernet's folder; None: RUN_DIR/supernet, trained first
