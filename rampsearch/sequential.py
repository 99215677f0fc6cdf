"""Seeds until decided: a stopping rule for a paired difference that stays valid under repeated looks.

`retrain --seeds auto` trains the contenders one seed at a time and looks at the per-seed differences
(searched minus hand-set, same seeds) after each seed from `min_seeds` to `max_seeds`. Looking after
every seed and stopping at the first t-test with p < 0.05 would claim a difference between equal
schedules far more often than 5% of the time (every look is another chance to be fooled).

Convention (a group-sequential design with an alpha-spending function): the two-sided error ALPHA is
spent over the K looks by the power family ALPHA * (k / K) ** RHO, so look k gets the increment
alpha_k and a t-interval at level 1 - alpha_k. By the union bound the chance that any look's interval
misses the true difference is at most the sum of the alpha_k, which is ALPHA, whatever the correlation
between looks. So stopping at the first interval that excludes 0 keeps the false-positive rate at or
below ALPHA, and that interval (a confidence sequence, conservative) is a valid 95% interval for the
difference at the moment of stopping: the report shows it instead of the fixed-n interval.
RHO = 2 spends little early (where 3 seeds decide only huge differences anyway) and keeps most of
ALPHA for the last looks, so a run that reaches its cap loses little against a fixed-n test.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
RHO = 2.0  # the spending function's shape: alpha spent by look k of K is ALPHA * (k / K) ** RHO
MIN_SEEDS = 3  # the first look: at 2 seeds a t-interval has 1 degree of freedom, too wide to decide anything
AUTO = "auto"  # the seeds setting that asks for this rule
# The rule's record in a retraining's folder: the rule, every look, and why it stopped. Written by
# rampsearch.retrain, read by rampsearch.report, which thus need not import each other.
STOPPING = "stopping.json"


@dataclass(frozen=True)
class SequentialPlan:
    """Looks after every seed from `min_seeds` to `max_seeds`, with ALPHA spent across them."""

    max_seeds: int
    min_seeds: int = MIN_SEEDS
    alpha: float = ALPHA
    rho: float = RHO

    def __post_init__(self) -> None:
        if self.min_seeds < 2 or self.max_seeds < self.min_seeds:
            raise ValueError(f"a sequential plan needs 2 <= min_seeds <= max_seeds, got {self.min_seeds} and "
                             f"{self.max_seeds}")

    @property
    def looks(self) -> int:
        return self.max_seeds - self.min_seeds + 1

    def alpha_at(self, seeds: int) -> float:
        """The error spent at the look after `seeds` seeds."""
        if not self.min_seeds <= seeds <= self.max_seeds:
            raise ValueError(f"no look at {seeds} seeds: looks are at {self.min_seeds}..{self.max_seeds}")
        k, total = seeds - self.min_seeds + 1, self.looks
        return self.alpha * ((k / total) ** self.rho - ((k - 1) / total) ** self.rho)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Look:
    """The interval for the mean paired difference after `seeds` seeds, at level 1 - `alpha`."""

    seeds: int
    difference: float
    ci_low: float
    ci_high: float
    alpha: float

    @property
    def decided(self) -> bool:
        """Whether the interval excludes 0: the schedules differ, in the direction of `difference`."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decided": self.decided}


def look(differences: Sequence[float], plan: SequentialPlan) -> Look:
    """The look after len(differences) seeds (which must be one of the plan's looks).

    Differences that are all equal have no spread: the interval is that one value (decided when it is
    not 0), as the fixed-n comparison treats it (rampsearch.report.stats.compare, "no variance").
    """
    d = np.asarray(differences, dtype=float)
    seeds, alpha = len(d), plan.alpha_at(len(d))
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(seeds)
    half = float(stats.t.ppf(1 - alpha / 2, seeds - 1)) * se
    return Look(seeds, mean, mean - half, mean + half, alpha)


def first_decision(differences: Sequence[float], plan: SequentialPlan) -> Look | None:
    """The first look (in seed order) whose interval excludes 0, or None: undecided so far."""
    for seeds in range(plan.min_seeds, min(len(differences), plan.max_seeds) + 1):
        current = look(differences[:seeds], plan)
        if current.decided:
            return current
    return None
