"""A sampler that proposes candidates the search has not scored yet: `DistinctSampler`.

Parameterizations snap a sampler's numbers to whole heads, so nearby numbers build the same ramp,
and a sampler that has found a good region keeps proposing it: in the one-shot demo 61% of TPE's
proposals were ramps scored already. `DistinctSampler` wraps a sampler that draws all of a trial's
numbers at once (`sample_relative`: multivariate TPE, NSGA-II) and, while the candidate those
numbers build was scored already (or is being scored, or is over budget), draws again. A sampler
that has converged draws the same point again and again (TPE takes the best of its candidates
each time), so after a few redraws the proposal is moved instead: each number by a random step
that grows with every attempt, so the nearest new candidates around the sampler's choice come
first. A proposal still not new after `draws` attempts is answered by the search with the earlier
trial's score (rampsearch.search.study.repeat_answer), so the sampler learns from it either way.

Samplers whose draws are not independent repeats (CMA-ES keeps one generation of asks; random
sampling draws each number on its own) are used as they are.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from .record import CandidateKey, TrialRecord

# Attempts per proposal: a draw costs a few milliseconds (multivariate TPE at a few hundred trials).
# The first REDRAWS ask the sampler again; the rest move its last proposal by a random step of
# STEP_SCALES[0] to STEP_SCALES[1] of each number's range, growing with every attempt: a ramp
# snapped to whole heads changes only when a number moves by about a head's share of the range.
DRAWS_PER_PROPOSAL = 20
REDRAWS = 3
STEP_SCALES = (0.02, 0.5)

# What a proposal builds: its candidate's key and whether it is within budget, or None when the numbers
# do not make a whole candidate (conditional parameters the joint draw left out).
Builder = Callable[[dict[str, Any]], "tuple[CandidateKey, bool] | None"]


class DistinctSampler(BaseSampler):
    """`base` (drawing jointly), redrawn while its proposal repeats a candidate; see the module doc."""

    def __init__(self, base: BaseSampler, build: Builder, seed: int | None = None,
                 draws: int = DRAWS_PER_PROPOSAL) -> None:
        self.base, self._build, self._draws = base, build, draws
        self._rng = np.random.RandomState(seed)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        params = self.base.sample_relative(study, trial, search_space)
        seen: set[CandidateKey] | None = None
        drawn = params
        for attempt in range(1, self._draws):
            built = self._build(params) if params else None
            if built is None:
                return params
            if seen is None:  # read once per proposal, only when a joint draw was made
                seen = scored_candidates(study.get_trials(deepcopy=False))
            key, feasible = built
            if feasible and key not in seen:
                return params
            if attempt < REDRAWS:
                params = drawn = self.base.sample_relative(study, trial, search_space)
            else:
                low, high = STEP_SCALES
                scale = low * (high / low) ** ((attempt - REDRAWS) / max(1, self._draws - 1 - REDRAWS))
                params = _moved(drawn, search_space, scale, self._rng)
        return params

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng.seed()


def _moved(params: dict[str, Any], space: dict[str, BaseDistribution], scale: float,
           rng: np.random.RandomState) -> dict[str, Any]:
    """`params` with every float and integer moved by a normal step of `scale` times its range (clipped to
    it), and every categorical redrawn with probability `scale`."""
    out = dict(params)
    for name, value in params.items():
        dist = space.get(name)
        if isinstance(dist, (FloatDistribution, IntDistribution)):
            moved = min(max(value + rng.normal(0.0, scale * (dist.high - dist.low)), dist.low), dist.high)
            out[name] = int(round(moved)) if isinstance(dist, IntDistribution) else float(moved)
        elif isinstance(dist, CategoricalDistribution) and rng.random_sample() < scale:
            out[name] = dist.choices[rng.randint(len(dist.choices))]
    return out


def scored_candidates(trials: list[FrozenTrial]) -> set[CandidateKey]:
    """The candidates that trained, train or will retry: what a new proposal should not repeat."""
    out = set()
    for t in trials:
        record = TrialRecord.of(t)
        if t.state != TrialState.WAITING and not record.rejected and record.candidate is not None:
            out.add(record.candidate)
    return out


def covers(trials: list[FrozenTrial], grid: Sequence[Any]) -> bool:
    """Whether `trials` scored (or score) every candidate of `grid` (SearchSpace.grid): a complete search."""
    seen = scored_candidates(trials)
    return all(candidate.key in seen for candidate in grid)


def joint_tpe(seed: int, startup_trials: int) -> optuna.samplers.TPESampler:
    """TPE drawing all numbers of a trial at once (multivariate), so a whole proposal can be redrawn."""
    import warnings

    with warnings.catch_warnings():  # `multivariate` has been experimental since Optuna 2.2 without a change
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True)
