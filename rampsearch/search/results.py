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
from .score import TOP1, Score, score_of_direction
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
            "reason": record.reason, "retry_of": record.retry_of, "repeat_of": record.repeat_of,
            "seed": record.seed, "method": record.method, "score_se": record.score_se,
        }
        if t.values and len(t.values) > 1:
            row.update({f"value_{i}": v for i, v in enumerate(t.values)})
        row.update({f"param_{k}": v for k, v in t.params.items()})
        for entry in record.history:
            row.update({f"{m}_e{entry['epoch']}": entry[m] for m in METRICS if m in entry})
        rows.append(row)
    return pd.DataFrame(rows)


def study_score(study: optuna.Study) -> Score:
    """The score of the study's first objective (the searched score: `accuracy` comes first or alone)."""
    return score_of_direction(study.directions[0].name.lower())


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete within-budget trials that trained (duplicates answered with an earlier score left out), best
    first (on the Pareto front first if multi-objective)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(v <= 0 for v in t.constraints.values()) and not TrialRecord.of(t).rejected]
    front = {t.number for t in study.best_trials} if len(study.directions) > 1 else set()
    score = study_score(study)
    return sorted(complete, key=lambda t: (t.number not in front if front else False, score.sort_key(t.values[0]),
                                           t.number))


@dataclass(frozen=True)
class Standing:
    """The best searched schedule and how it stands against the hand-set ramp in the search."""

    best: FrozenTrial | None  # best complete, within-budget trial other than the hand-set ramp
    handset: FrozenTrial | None  # the hand-set ramp's trial, if it completed
    score: Score = Score(TOP1)  # what the search ranked by

    @property
    def handset_scored_higher(self) -> bool:
        """Whether the hand-set ramp scored at least as well as the best searched schedule (better: by the
        searched score, so a lower loss is higher)."""
        return (self.best is not None and self.handset is not None
                and not self.score.better(self.best.values[0], self.handset.values[0]))

    def sentence(self) -> str | None:
        """Plain words when the hand-set ramp beat every searched schedule in the search, else None."""
        if not self.handset_scored_higher:
            return None
        handset, best = self.handset.values[0], self.best.values[0]
        beat = "better than" if self.score.better(handset, best) else "as well as"
        return (f"the hand-set ramp scored {beat} every searched schedule in the search ({self.score.short} "
                f"{self.score.format(handset)} vs {self.score.format(best)} for the best searched one, trial "
                f"{self.best.number}): the searched schedule is a runner-up, not an improvement the search found")


def ranked_searched(study: optuna.Study) -> list[tuple[FrozenTrial, TrialRecord]]:
    """Complete within-budget searched trials (the hand-set ramp left out), best first, with their records."""
    return [(t, r) for t in _ranked(study) if not (r := TrialRecord.of(t)).handset]


def standing(study: optuna.Study) -> Standing:
    best = next(iter(ranked_searched(study)), (None, None))[0]
    handset = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if TrialRecord.of(t).handset), None)
    return Standing(best, handset, study_score(study))


def write_best(result: Standing, space: SearchSpace, path: Path) -> None:
    trial = result.best
    record = TrialRecord.of(trial)
    arch = Architecture.from_dict(record.architecture)
    data = RampSchedule(record.ramp).to_dict(arch)
    data.update({"img_size": space.img_size, "trial": trial.number, "score_metric": result.score.metric,
                 "score": trial.values[0], "score_se": record.score_se, "flops": record.flops,
                 "params": record.params, "handset_scored_higher": result.handset_scored_higher})
    if result.handset is not None:
        data["handset_score"] = result.handset.values[0]
    header = (f"# Best searched within-budget schedule of search space {space.name} (trial {trial.number}), "
              f"ranked by {result.score.label}.\n")
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
