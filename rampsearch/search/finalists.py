"""Finalists: which searched schedules are retrained, re-scored first against the winner's curse.

The best of N noisy scores is biased upwards: the search's top trial is as likely the luckiest seed
(or the luckiest draw of scoring images) as the best schedule. So before the top K are retrained,
the best M distinct searched schedules (`retrain.rescore`, default 3 K) are scored again:

- method train: `retrain.rescore_seeds` more proxy trainings each (seeds search.seed + 1, ...; on the
  search split, in RUN_DIR/rescore/trial-NNNN/seedS/, resumable), ranked by the mean over all seeds;
- method one-shot: on the whole search split instead of its first `supernet.score_images` images
  (nothing to do when those are the whole split: every candidate then already had every image).

Several objectives keep the search's own Pareto ranking (a mean over seeds has no front to rank on).
Each finalist says in `how` how it was chosen; the report prints that.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial

from ..architecture import Architecture
from ..model_spec import ModelSpec
from ..ramp import RampSchedule
from .record import ONE_SHOT, TrialRecord
from .results import ranked_searched
from .space import RetrainSettings, SearchSpace
from .trial import run_trial, train_config

RESCORE_DIR = "rescore"  # in the run directory


@dataclass(frozen=True)
class Finalist:
    trial: FrozenTrial
    record: TrialRecord
    scores: tuple[float, ...]  # the search's score, then any re-scores (one-shot: the re-score replaces it)
    how: str  # how it was chosen, in words

    @property
    def score(self) -> float:
        return statistics.fmean(self.scores)

    def spec(self, space: SearchSpace) -> ModelSpec:
        return ModelSpec.iformer(*_model(self.record), space.img_size)


def _model(record: TrialRecord) -> tuple[Architecture, RampSchedule]:
    return Architecture.from_dict(record.architecture), RampSchedule(record.ramp)


def _distinct(ranked: list[tuple[FrozenTrial, TrialRecord]], space: SearchSpace) -> list[tuple[FrozenTrial, TrialRecord]]:
    """`ranked` without repeats of a schedule or of the hand-set ramp (the first of each is kept)."""
    handset = space.handset()
    seen = {(json.dumps(handset.arch.to_dict(), sort_keys=True), handset.ramp.ratios)}
    out = []
    for trial, record in ranked:
        key = (json.dumps(record.architecture, sort_keys=True), record.ramp)
        if key not in seen:
            seen.add(key)
            out.append((trial, record))
    return out


def choose_finalists(run_dir: Path, space: SearchSpace, study: optuna.Study, settings: RetrainSettings,
                     method: str, supernet: str | None, device: str = "auto",
                     log: Callable[[str], None] = print) -> list[Finalist]:
    """The top `settings.top` distinct within-budget searched schedules, re-scored as the module doc says."""
    pool = _distinct(ranked_searched(study), space)[:settings.rescore or 3 * settings.top]
    top = settings.top
    if len(pool) <= top or space.multi_objective:
        why = "the search's Pareto ranking" if space.multi_objective else "its search score (no runner-up to re-score)"
        return [Finalist(t, r, (t.values[0],), f"top {i + 1} by {why}") for i, (t, r) in enumerate(pool[:top])]
    if method == ONE_SHOT:
        finalists = _rescore_on_supernet(pool, space, supernet, device, log)
    elif settings.rescore_seeds:
        finalists = _rescore_by_seeds(pool, space, run_dir, settings.rescore_seeds, device, log)
    else:
        return [Finalist(t, r, (t.values[0],), f"top {i + 1} by its search score (retrain.rescore_seeds: 0)")
                for i, (t, r) in enumerate(pool[:top])]
    ranked = sorted(finalists, key=lambda f: (-f.score, f.trial.number))
    return [Finalist(f.trial, f.record, f.scores, f"{f.how}: {f.score:.2f}%, ranked {i + 1} of {len(pool)}")
            for i, f in enumerate(ranked[:top])]


def _rescore_by_seeds(pool: list[tuple[FrozenTrial, TrialRecord]], space: SearchSpace, run_dir: Path, seeds: int,
                      device: str, log: Callable[[str], None]) -> list[Finalist]:
    out = []
    for trial, record in pool:
        scores = [trial.values[0]]
        spec = ModelSpec.iformer(*_model(record), space.img_size)
        for extra in range(1, seeds + 1):
            seed = space.search.seed + extra
            folder = run_dir / RESCORE_DIR / f"trial-{trial.number:04d}" / f"seed{seed}"
            log(f"re-scoring trial {trial.number} with proxy seed {seed}")
            scores.append(run_trial(train_config(space, spec, folder, device, seed=seed),
                                    report=lambda epoch, metrics: None)["top1"])
        out.append(Finalist(trial, record, tuple(scores), f"one of the best {len(pool)} searched; mean proxy top-1 "
                                                          f"over {len(scores)} seeds"))
    return out


def _rescore_on_supernet(pool: list[tuple[FrozenTrial, TrialRecord]], space: SearchSpace, supernet: str | None,
                         device: str, log: Callable[[str], None]) -> list[Finalist]:
    from ..train import resolve_device
    from .one_shot import ALL_IMAGES, make_scorer

    scorer = make_scorer(space, Path(supernet), resolve_device(device), score_images=ALL_IMAGES)
    how = f"one of the best {len(pool)} searched; supernet score on all {scorer.images} search-split images"
    if scorer.images <= space.supernet.score_images:  # the search scored every candidate on all of them
        return [Finalist(t, r, (t.values[0],), how) for t, r in pool]
    log(f"re-scoring the best {len(pool)} searched schedules on all {scorer.images} search-split images")
    return [Finalist(t, r, (scorer.score(space.candidate(*_model(r)))["top1"],), how) for t, r in pool]
