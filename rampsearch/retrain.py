"""Full retraining of a search's best schedules and of the hand-set ramp, seed by seed.

Every contender (the top-K within-budget schedules, the hand-set ramp and, optionally, ViT
baselines at matched FLOPs) trains with the same recipe, data and seeds through `train.fit`.
Each run keeps its checkpoints in retrain/NAME/seedS/, so rerunning resumes; a finished run
(its result.json exists) is not trained again. Results go to retrain/results.csv.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from optuna.trial import TrialState

from .architecture import Architecture
from .errors import UserError
from .ramp import RampSchedule
from .search.results import redact_url
from .search.space import SearchSpace, load_space
from .search.trial import train_config

RETRAIN_DEFAULTS = {"top": 1, "seeds": 3, "recipe": "paper", "epochs": None}


@dataclass
class Contender:
    """One schedule (or baseline model) to retrain."""

    name: str
    kind: str  # "ramp" (an iFormer with a ramp) or "baseline" (a ViT at matched FLOPs)
    flops: int
    params: int
    architecture: dict[str, Any] | None = None
    ramp: list[float] | None = None
    baseline: dict[str, Any] | None = None  # rampsearch.baselines.BaselineSpec as a dict
    proxy_score: float | None = None
    trial: int | None = None


def retrain_settings(space: SearchSpace, **given: Any) -> dict[str, Any]:
    """Command-line values over the space's `retrain:` section over the defaults."""
    settings = {**RETRAIN_DEFAULTS, **space.retrain}
    settings.update({k: v for k, v in given.items() if v is not None})
    return settings


def load_run(run_dir: Path, storage: str | None = None):
    """(space, study) of a search run directory; an RDB study needs the same `storage` URL again."""
    import optuna

    from .search.optuna_backend import open_storage

    if not (run_dir / "space.yaml").exists():
        raise UserError(f"{run_dir} is not a search run directory (no space.yaml); run `rampsearch search` first")
    space = load_space(run_dir / "space.yaml")
    meta = json.loads((run_dir / "search.json").read_text()) if (run_dir / "search.json").exists() else {}
    if meta.get("storage_kind") == "rdb" and not storage:
        raise UserError(f"the study of {run_dir} lives in {meta['storage']}; pass the same --storage URL")
    study = optuna.load_study(study_name=meta.get("study", space.name), storage=open_storage(run_dir, storage))
    return space, study


def plan(run_dir: Path, top: int, baselines: bool, storage: str | None = None) -> tuple[SearchSpace, list[Contender]]:
    """The hand-set ramp, the top-`top` distinct within-budget schedules, and optional baselines."""
    space, study = load_run(run_dir, storage)
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not trials:
        raise UserError(f"{run_dir}: the search has no complete trial yet")
    base = space.baseline()
    baseline_trial = next((t for t in trials if t.user_attrs.get("baseline")), None)
    contenders = [Contender("handset", "ramp", base.flops, base.params, base.arch.to_dict(),
                            list(base.ramp.ratios), proxy_score=baseline_trial.values[0] if baseline_trial else None,
                            trial=baseline_trial.number if baseline_trial else None)]
    seen = {(json.dumps(base.arch.to_dict(), sort_keys=True), tuple(base.ramp.ratios))}
    feasible = [t for t in trials if not t.user_attrs.get("baseline")
                and all(v <= 0 for v in t.constraints.values())]
    for t in sorted(feasible, key=lambda t: (-t.values[0], t.number)):
        key = (json.dumps(t.user_attrs["architecture"], sort_keys=True), tuple(t.user_attrs["ramp"]))
        if key in seen:
            continue
        seen.add(key)
        rank = sum(1 for c in contenders if c.name != "handset") + 1
        contenders.append(Contender("best" if rank == 1 else f"top{rank}", "ramp", t.user_attrs["flops"],
                                    t.user_attrs["params"], t.user_attrs["architecture"], t.user_attrs["ramp"],
                                    proxy_score=t.values[0], trial=t.number))
        if rank == top:
            break
    if baselines:
        from .baselines import baseline_models

        budget = space.budget.gflops or base.flops / 1e9
        for spec in baseline_models(budget, space.img_size, space.budget.num_classes):
            contenders.append(Contender(spec.family, "baseline", spec.flops, spec.params, baseline=asdict(spec)))
    return space, contenders


def run_retrain(run_dir: str | Path, top: int | None = None, seeds: int | None = None, recipe: str | None = None,
                epochs: int | None = None, baselines: bool = False, device: str | None = None,
                storage: str | None = None, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Train every contender with every seed (resuming unfinished runs); return retrain/results.csv's rows."""
    from .search.trial import run_trial

    run_dir = Path(run_dir)
    if not (run_dir / "space.yaml").exists():
        raise UserError(f"{run_dir} is not a search run directory (no space.yaml); run `rampsearch search` first")
    settings = retrain_settings(load_space(run_dir / "space.yaml"), top=top, seeds=seeds, recipe=recipe,
                                epochs=epochs)
    space, contenders = plan(run_dir, settings["top"], baselines, storage)
    out = run_dir / "retrain"
    out.mkdir(exist_ok=True)
    command = " ".join(redact_url(a) if "://" in a else a for a in sys.argv)
    (out / "plan.json").write_text(json.dumps({"settings": settings, "commands": [command],
                                               "contenders": [asdict(c) for c in contenders]}, indent=2))
    rows = []
    for contender in contenders:
        for seed in range(settings["seeds"]):
            folder = out / contender.name / f"seed{seed}"
            result_file = folder / "result.json"  # train.fit writes it when the run is complete
            if result_file.exists():
                log(f"{contender.name} seed {seed}: done earlier")
            else:
                log(f"{contender.name} seed {seed}: training ({settings['recipe']} recipe, "
                    f"{settings['epochs'] or 'its'} epochs)")
                run_trial(_config(space, contender, folder, seed, settings, device), report=lambda epoch, metrics: None)
            result = json.loads(result_file.read_text())  # one source for fresh and resumed runs alike
            rows.append({"name": contender.name, "kind": contender.kind, "seed": seed, "top1": result["top1"],
                         "top5": result.get("top5"), "loss": result.get("loss"), "seconds": result["seconds"],
                         "flops": contender.flops, "params": contender.params,
                         "proxy_score": contender.proxy_score, "trial": contender.trial})
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    return frame


def _config(space: SearchSpace, contender: Contender, folder: Path, seed: int, settings: dict[str, Any],
            device: str | None) -> dict[str, Any]:
    from .search.space import Candidate

    if contender.kind == "ramp":
        arch = Architecture.from_dict(contender.architecture)
        candidate = space.candidate(arch, RampSchedule(tuple(contender.ramp)))
    else:  # the baseline model replaces the iFormer; the data, recipe and seed stay the same
        candidate = Candidate(space.base, RampSchedule.handset(space.base), contender.flops, contender.params)
    config = train_config(space, candidate, folder, device, epochs=settings["epochs"], recipe=settings["recipe"],
                          seed=seed)
    if contender.kind == "baseline":
        config["baseline"] = contender.baseline
    return config

