"""One search trial: a candidate's proxy training through the one training function, `train.fit`.

Backends differ only in how they report per-epoch metrics (Optuna: trial.report + pruning,
Ray: tune.report + ASHA); they pass that as `report(epoch, metrics)`, which may raise to stop.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from .space import Candidate, SearchSpace

Report = Callable[[int, dict[str, float]], None]


class TrialFailed(RuntimeError):
    """A trial that cannot produce a result (NaN loss, ...): recorded with its reason, the search goes on."""


def admit(trial: Any, candidate: Candidate) -> bool:
    """Whether a candidate may train; an over-budget one is recorded on its trial and never trains.

    The baseline trains even when over budget: it is what every other trial is judged against (its
    constraint values still keep it from being reported as the best schedule).
    """
    if candidate.feasible or candidate.baseline:
        return True
    trial.set_user_attr("infeasible", True)
    trial.set_user_attr("reason", candidate.describe_violation())
    return False


def train_config(space: SearchSpace, candidate: Candidate, out_dir: Path, device: str | None = None,
                 epochs: int | None = None, recipe: str | None = None, seed: int | None = None,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `train.fit` config of a candidate: the space's proxy settings unless given."""
    proxy = space.proxy
    config: dict[str, Any] = {
        "architecture": candidate.arch.to_dict(),
        "ramp": list(candidate.ramp.ratios),
        "img_size": space.img_size,
        "data": proxy.get("data", "synthetic-freq"),
        "recipe": recipe or proxy.get("recipe", "proxy"),
        "overrides": {**proxy.get("overrides", {}), **(overrides or {})},
        "epochs": epochs or proxy.get("epochs"),
        "seed": space.search["seed"] if seed is None else seed,
        "out": str(out_dir),
    }
    if device:
        config["device"] = device
    return config


def run_trial(config: dict[str, Any], report: Report) -> dict[str, Any]:
    """Train once; return the final metrics plus `history` (per-epoch metrics) and `seconds`."""
    from ..train import fit

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if not math.isfinite(metrics.get("train_loss", metrics.get("loss", 0.0))):
            raise TrialFailed(f"training diverged: loss is {metrics.get('train_loss', metrics.get('loss'))} "
                              f"after epoch {epoch}")
        report(epoch, metrics)

    result = fit(config, on_epoch=on_epoch)
    return {**result.final, "history": result.history, "seconds": result.seconds}
