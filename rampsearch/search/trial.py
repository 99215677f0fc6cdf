"""One search trial's pieces, whatever its method: its folder, whether it may train, and the `train.fit`
config and call that a proxy training (and the supernet, and a retraining) runs through.

A backend scores a trial with `rampsearch.search.methods.evaluate_candidate` (the run's method).
Backends differ only in how they report per-epoch metrics (Optuna: trial.report + pruning,
Ray: tune.report + ASHA); they pass that as `report(epoch, metrics)`, which may raise to stop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import SEARCH
from ..model_spec import ModelSpec
from .methods.protocol import Report
from .space import Candidate, SearchSpace


def trial_folder(run_dir: Path, number: int) -> Path:
    """Where the trial whose folder number is `number` trains (a retry uses its original's number),
    on whichever node or backend runs it."""
    return run_dir / "trials" / f"{number:04d}"


def admitted(candidate: Candidate) -> bool:
    """Whether a candidate may train; an over-budget one is recorded (its record says so) and never trains.

    The hand-set ramp trains even when over budget: it is what every other trial is judged against
    (its constraint values still keep it from being reported as the best schedule).
    """
    return candidate.feasible or candidate.handset


def candidate_spec(space: SearchSpace, candidate: Candidate) -> ModelSpec:
    return ModelSpec.iformer(candidate.arch, candidate.ramp, space.img_size)


def train_config(space: SearchSpace, spec: ModelSpec, out_dir: Path | None, device: str | None = None,
                 epochs: int | None = None, recipe: str | None = None, seed: int | None = None,
                 overrides: dict[str, Any] | None = None, quiet: bool = True,
                 keep_checkpoints: bool = False, data_split: str = SEARCH, init: Path | None = None) -> dict[str, Any]:
    """The `train.fit` config that trains `spec` with the space's proxy settings, unless given; it writes
    to `out_dir` (None: nowhere).

    `data_split`: SEARCH (search trials) trains on the training data minus its search split and scores
    the candidate on that split, never on val; FINAL (retraining) trains on all training data and reports
    val (rampsearch.data). `init`: a weights file to start from instead of random weights.
    """
    proxy = space.proxy
    config: dict[str, Any] = {
        "img_size": spec.img_size,
        "data": proxy.data,
        "recipe": recipe or proxy.recipe,
        "overrides": {**proxy.overrides, **(overrides or {})},
        "epochs": epochs or proxy.epochs,
        "seed": space.search.seed if seed is None else seed,
        "out": str(out_dir) if out_dir else None,
        "quiet": quiet,
        "keep_checkpoints": keep_checkpoints,
        "data_split": data_split,
        "init": str(init) if init else None,
    }
    if spec.vit is not None:
        config["baseline"] = spec.to_dict()["vit"]
    elif spec.supernet is not None:
        config["supernet"] = spec.supernet.to_dict()
    else:
        config.update(architecture=spec.architecture.to_dict(), ramp=list(spec.ramp.ratios))
    if device:
        config["device"] = device
    return config


def run_trial(config: dict[str, Any], report: Report | None) -> dict[str, Any]:
    """Train once (fit raises TrainingDiverged on a NaN loss); return the final metrics, `history`, `seconds`."""
    from ..train import fit

    result = fit(config, on_epoch=report)
    return {**result.final, "history": result.history, "seconds": result.seconds}
