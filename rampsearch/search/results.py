"""What a search leaves in its run directory: trials.csv / trials.parquet, best.yaml.

Both backends keep their trials in one Optuna study, so this reads only the study, through the
trial record. best.yaml holds the best *searched* schedule; when the hand-set ramp scored higher
in the search, best.yaml and the summary say so instead of presenting the runner-up as a winner.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState

from ..architecture import Architecture
from ..ramp import RampSchedule
from .record import DUPLICATE, INTERRUPTED, TrialRecord
from .space import SearchSpace
from .study import interrupted_numbers

METRICS = ("top1", "top5", "loss", "train_loss")


def _duration(t: FrozenTrial, record: TrialRecord) -> float | None:
    if record.duration_s is not None:
        return record.duration_s
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


# An RDB trial failed by heartbeats cannot be written any more; its retry says it was interrupted.
SILENT_WORKER = "interrupted (its process stopped sending heartbeats)"


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, in trial-number order."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    for t in sorted(trials, key=lambda t: t.number):
        record = TrialRecord.of(t)
        if t.number in interrupted and record.status is None:
            record = dataclasses.replace(record, status=INTERRUPTED, reason=SILENT_WORKER)
        row: dict[str, Any] = {
            "number": t.number,
            "state": "OVER_BUDGET" if record.over_budget else "DUPLICATE" if record.status == DUPLICATE
            else t.state.name,
            "value": t.values[0] if t.values else None,
            "flops": record.flops, "params": record.params,
            "ramp": json.dumps(list(record.ramp)) if record.ramp is not None else None,
            "architecture": json.dumps(record.architecture) if record.architecture is not None else None,
            "duration_s": _duration(t, record), "handset": record.handset, "status": record.status,
            "reason": record.reason, "retry_of": record.retry_of, "seed": record.seed, "method": record.method,
        }
        if t.values and len(t.values) > 1:
            row.update({f"value_{i}": v for i, v in enumerate(t.values)})
        row.update({f"param_{k}": v for k, v in t.params.items()})
        for entry in record.history:
            row.update({f"{m}_e{entry['epoch']}": entry[m] for m in METRICS if m in entry})
        rows.append(row)
    return pd.DataFrame(rows)


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete within-budget trials, best first (on the Pareto front first if multi-objective)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(v <= 0 for v in t.constraints.values())]
    front = {t.number for t in study.best_trials} if len(study.directions) > 1 else set()
    return sorted(complete, key=lambda t: (t.number not in front if front else False, -t.values[0], t.number))


@dataclass(frozen=True)
class Standing:
    """The best searched schedule and how it stands against the hand-set ramp in the search."""

    best: FrozenTrial | None  # best complete, within-budget trial other than the hand-set ramp
    handset: FrozenTrial | None  # the hand-set ramp's trial, if it completed

    @property
    def handset_scored_higher(self) -> bool:
        return self.best is not None and self.handset is not None and self.handset.values[0] >= self.best.values[0]

    def sentence(self) -> str | None:
        """Plain words when the hand-set ramp beat every searched schedule in the search, else None."""
        if not self.handset_scored_higher:
            return None
        handset, best = self.handset.values[0], self.best.values[0]
        beat = "higher than" if handset > best else "as high as"
        return (f"the hand-set ramp scored {beat} every searched schedule in the search (proxy top-1 {handset:.2f}% "
                f"vs {best:.2f}% for the best searched one, trial {self.best.number}): the searched schedule is a "
                "runner-up, not an improvement the search found")


def ranked_searched(study: optuna.Study) -> list[tuple[FrozenTrial, TrialRecord]]:
    """Complete within-budget searched trials (the hand-set ramp left out), best first, with their records."""
    return [(t, r) for t in _ranked(study) if not (r := TrialRecord.of(t)).handset]


def standing(study: optuna.Study) -> Standing:
    best = next(iter(ranked_searched(study)), (None, None))[0]
    handset = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if TrialRecord.of(t).handset), None)
    return Standing(best, handset)


def write_best(result: Standing, space: SearchSpace, path: Path) -> None:
    trial = result.best
    record = TrialRecord.of(trial)
    arch = Architecture.from_dict(record.architecture)
    data = RampSchedule(record.ramp).to_dict(arch)
    data.update({"img_size": space.img_size, "trial": trial.number, "accuracy": trial.values[0],
                 "flops": record.flops, "params": record.params,
                 "handset_scored_higher": result.handset_scored_higher})
    if result.handset is not None:
        data["handset_accuracy"] = result.handset.values[0]
    header = f"# Best searched within-budget schedule of search space {space.name} (trial {trial.number}).\n"
    if result.handset_scored_higher:
        header += f"# Note: {result.sentence()}.\n"
    header += f"# Use with: rampsearch train --arch {path.name} --ramp {path.name}\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


def write_outputs(study: optuna.Study, space: SearchSpace, run_dir: Path) -> dict[str, Path]:
    frame = trials_frame(study)
    paths = {"csv": run_dir / "trials.csv", "parquet": run_dir / "trials.parquet"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    result = standing(study)
    if result.best is not None:
        paths["best"] = run_dir / "best.yaml"
        write_best(result, space, paths["best"])
    return paths
