"""What a search leaves in its run directory: trials.csv / trials.parquet, best.yaml.

Both backends keep their trials in one Optuna study, so this reads only the study.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState

from ..architecture import Architecture
from ..ramp import RampSchedule
from .space import SearchSpace

METRICS = ("top1", "top5", "loss", "train_loss")


def redact_url(url: str | None) -> str | None:
    """A storage URL with its password replaced, for logs and files."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url) if url else url


def _duration(t: FrozenTrial) -> float | None:
    if "duration_s" in t.user_attrs:
        return t.user_attrs["duration_s"]
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, in trial-number order."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        attrs = t.user_attrs
        row: dict[str, Any] = {
            "number": t.number,
            "state": "OVER_BUDGET" if attrs.get("infeasible") else t.state.name,
            "value": t.values[0] if t.values else None,
            "flops": attrs.get("flops"), "params": attrs.get("params"),
            "ramp": json.dumps(attrs["ramp"]) if "ramp" in attrs else None,
            "architecture": json.dumps(attrs["architecture"]) if "architecture" in attrs else None,
            "duration_s": _duration(t), "baseline": bool(attrs.get("baseline")),
            "reason": attrs.get("error") or attrs.get("reason"), "retry_of": attrs.get("retry_of"),
        }
        if t.values and len(t.values) > 1:
            row.update({f"value_{i}": v for i, v in enumerate(t.values)})
        row.update({f"param_{k}": v for k, v in t.params.items()})
        for entry in attrs.get("history", []):
            row.update({f"{m}_e{entry['epoch']}": entry[m] for m in METRICS if m in entry})
        rows.append(row)
    return pd.DataFrame(rows)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """Highest accuracy among complete, within-budget trials (on the Pareto front if multi-objective)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(v <= 0 for v in t.constraints.values())]
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        complete = [t for t in complete if t.number in front] or complete
    return max(complete, key=lambda t: (t.values[0], -t.number), default=None)


def write_best(trial: FrozenTrial, space: SearchSpace, path: Path) -> None:
    arch = Architecture.from_dict(trial.user_attrs["architecture"])
    data = RampSchedule(tuple(trial.user_attrs["ramp"])).to_dict(arch)
    data.update({"img_size": space.img_size, "trial": trial.number, "accuracy": trial.values[0],
                 "flops": trial.user_attrs["flops"], "params": trial.user_attrs["params"],
                 "baseline": bool(trial.user_attrs.get("baseline"))})
    header = (f"# Best within-budget schedule of search space {space.name} (trial {trial.number}).\n"
              f"# Use with: rampsearch train --arch {path.name} --ramp {path.name}\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


def write_outputs(study: optuna.Study, space: SearchSpace, run_dir: Path) -> dict[str, Path]:
    frame = trials_frame(study)
    paths = {"csv": run_dir / "trials.csv", "parquet": run_dir / "trials.parquet"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    best = best_trial(study)
    if best is not None:
        paths["best"] = run_dir / "best.yaml"
        write_best(best, space, paths["best"])
    return paths
