"""One search trial: a candidate's proxy training through the one training function, `train.fit`.

Backends differ only in how they report per-epoch metrics (Optuna: trial.report + pruning,
Ray: tune.report + ASHA); they pass that as `report(epoch, metrics)`, which may raise to stop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .space import Candidate, SearchSpace

Report = Callable[[int, dict[str, float]], None]


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
        "quiet": True,  # the search shows its own progress line
    }
    if device:
        config["device"] = device
    return config


def run_trial(config: dict[str, Any], report: Report) -> dict[str, Any]:
    """Train once (fit raises TrainingDiverged on a NaN loss); return the final metrics, `history`, `seconds`."""
    from ..train import fit

    result = fit(config, on_epoch=report)
    return {**result.final, "history": result.history, "seconds": result.seconds}
