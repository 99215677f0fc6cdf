"""Finalists: which searched schedules are retrained, re-scored first against the winner's curse.

The best of N noisy scores is biased upwards: the search's top trial is as likely the luckiest seed
(or the luckiest draw of scoring images) as the best schedule. So before the top K are retrained,
the best M distinct searched schedules (`retrain.rescore`, default 3 K) are scored again:

- method train: `retrain.rescore_seeds` more proxy trainings each (seeds search.seed + 1, ...; on the
  search split, in RUN_DIR/rescore/trial-NNNN/seedS/, resumable), ranked by the mean over all seeds;
- method one-shot: on the whole search split instead of its first `supernet.score_images` images.

Both rank by the searched score (`search.score`) and say whether the best is distinguishable from the
runner-up: one-shot by a paired comparison image by image on the same images, method train by a
paired t-test over the seeds they share.

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
from .score import paired_difference
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
        finalists, separation = _rescore_on_supernet(pool, space, supernet, device, log)
    elif settings.rescore_seeds:
        finalists, separation = _rescore_by_seeds(pool, space, run_dir, settings.rescore_seeds, device, log)
    else:
        return [Finalist(t, r, (t.values[0],), f"top {i + 1} by its search score (retrain.rescore_seeds: 0)")
                for i, (t, r) in enumerate(pool[:top])]
    log(f"re-scored: {separation}")
    score = space.score
    return [Finalist(f.trial, f.record, f.scores, f"{f.how}: {score.format(f.score)}, ranked {i + 1} of {len(pool)}"
                     + (f"; {separation}" if i == 0 else ""))
            for i, f in enumerate(_by_score(finalists, space)[:top])]


def _by_score(finalists: list[Finalist], space: SearchSpace) -> list[Finalist]:
    return sorted(finalists, key=lambda f: (space.score.sort_key(f.score), f.trial.number))


def _rescore_by_seeds(pool: list[tuple[FrozenTrial, TrialRecord]], space: SearchSpace, run_dir: Path, seeds: int,
                      device: str, log: Callable[[str], None]) -> tuple[list[Finalist], str]:
    """Each of `pool` with `seeds` more proxy trainings, and how the best compares with the runner-up over the
    seeds they share (every trial of a search trains with search.seed, and each re-score seed is the same)."""
    out, metric = [], space.score.metric
    for trial, record in pool:
        scores = [trial.values[0]]
        spec = ModelSpec.iformer(*_model(record), space.img_size)
        for extra in range(1, seeds + 1):
            seed = space.search.seed + extra
            folder = run_dir / RESCORE_DIR / f"trial-{trial.number:04d}" / f"seed{seed}"
            log(f"re-scoring trial {trial.number} with proxy seed {seed}")
            scores.append(run_trial(train_config(space, spec, folder, device, seed=seed),
                                    report=lambda epoch, metrics: None)[metric])
        out.append(Finalist(trial, record, tuple(scores), f"one of the best {len(pool)} searched; mean "
                                                          f"{space.score.short} over {len(scores)} seeds"))
    best, runner_up = _by_score(out, space)[:2]
    d = paired_difference(best.scores, runner_up.scores)  # the same paired t, over seeds instead of images
    verdict = ("distinguishable" if d.distinguishable else
               "not distinguishable at this many seeds: the ranking between them is noise")
    return out, (f"best (trial {best.trial.number}) minus runner-up (trial {runner_up.trial.number}): "
                 f"{d.difference:+.4g} {space.score.short}, 95% CI [{d.ci_low:+.4g}, {d.ci_high:+.4g}] over "
                 f"{d.images} paired seeds: {verdict}")


def _rescore_on_supernet(pool: list[tuple[FrozenTrial, TrialRecord]], space: SearchSpace, supernet: str | None,
                         device: str, log: Callable[[str], None]) -> tuple[list[Finalist], str]:
    """Each of `pool` scored again on the whole search split, and how the best compares with the runner-up
    image by image (the same images: what both get right or wrong alike cancels)."""
    from ..train import resolve_device
    from .one_shot import ALL_IMAGES, make_scorer

    scorer = make_scorer(space, Path(supernet), resolve_device(device), score_images=ALL_IMAGES)
    metric = space.score.metric
    how = f"one of the best {len(pool)} searched; supernet {space.score.short} on all {scorer.images} search-split images"
    log(f"re-scoring the best {len(pool)} searched schedules on all {scorer.images} search-split images")
    scored = {t.number: scorer.score(space.candidate(*_model(r))) for t, r in pool}
    out = [Finalist(t, r, (scored[t.number].metrics[metric],), how) for t, r in pool]
    best, runner_up = _by_score(out, space)[:2]
    d = paired_difference(scored[best.trial.number].per_image(metric), scored[runner_up.trial.number].per_image(metric))
    verdict = "distinguishable" if d.distinguishable else "not distinguishable on these images: a tie in all but name"
    return out, (f"best (trial {best.trial.number}) minus runner-up (trial {runner_up.trial.number}): "
                 f"{d.difference:+.4g} {space.score.short}, 95% CI [{d.ci_low:+.4g}, {d.ci_high:+.4g}] over "
                 f"{d.images} paired images: {verdict}")
