"""Finalists: which searched schedules are retrained, re-scored first against the winner's curse.

The best of N noisy scores is biased upwards: the search's top trial is as likely the luckiest seed
(or the luckiest draw of scoring images) as the best schedule. So before the top K are retrained,
the best M distinct searched schedules (`retrain.rescore`, default 3 K) are scored again, as the
search's method says (`SearchMethod.rescore`, rampsearch.search.methods):

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

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial

from .methods.protocol import Finalist, SearchMethod
from .record import TrialRecord
from .results import ranked_searched
from .score import paired_difference
from .space import RetrainSettings, SearchSpace


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
                     method: SearchMethod, supernet: str | None, device: str = "auto",
                     log: Callable[[str], None] = print) -> list[Finalist]:
    """The top `settings.top` distinct within-budget searched schedules, re-scored as the module doc says."""
    pool = _distinct(ranked_searched(study), space)[:settings.rescore or 3 * settings.top]
    top = settings.top
    if len(pool) <= top or space.multi_objective:
        why = "the search's Pareto ranking" if space.multi_objective else "its search score (no runner-up to re-score)"
        return [Finalist(t, r, (t.values[0],), f"top {i + 1} by {why}") for i, (t, r) in enumerate(pool[:top])]
    finalists, separation = method.rescore(pool, space, run_dir, settings, supernet, device, log)
    if separation is None:
        return [dataclasses.replace(f, how=f"top {i + 1} by {f.how}") for i, f in enumerate(finalists[:top])]
    log(f"re-scored: {separation}")
    score = space.score
    return [Finalist(f.trial, f.record, f.scores, f"{f.how}: {score.format(f.score)}, ranked {i + 1} of {len(pool)}"
                     + (f"; {separation}" if i == 0 else ""))
            for i, f in enumerate(by_score(finalists, space)[:top])]


def by_score(finalists: list[Finalist], space: SearchSpace) -> list[Finalist]:
    """Best first by the searched score; ties by trial number."""
    return sorted(finalists, key=lambda f: (space.score.sort_key(f.score), f.trial.number))


def best_vs_runner_up(finalists: list[Finalist], space: SearchSpace, values: Callable[[Finalist], Sequence[float]],
                      unit: str, tie: str) -> str:
    """How the best finalist compares with the runner-up: the paired difference of their `values` (per image or
    per seed, `unit`), its 95% CI, and whether it is distinguishable (else `tie`, which says what that means)."""
    best, runner_up = by_score(finalists, space)[:2]
    d = paired_difference(values(best), values(runner_up))
    verdict = "distinguishable" if d.distinguishable else tie
    return (f"best (trial {best.trial.number}) minus runner-up (trial {runner_up.trial.number}): "
            f"{d.difference:+.4g} {space.score.short}, 95% CI [{d.ci_low:+.4g}, {d.ci_high:+.4g}] over "
            f"{d.images} paired {unit}: {verdict}")
