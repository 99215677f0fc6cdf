"""What a search ranks its candidates by: the score (`search.score` in the space).

Two metrics, both measured on the search split (never on val), the same images for every candidate:

- `loss` (lower is better): the mean cross-entropy. Continuous, so candidates rank instead of tying:
  top-1 over a few hundred images moves in steps of one image, and in the one-shot demo 66 of 100
  candidates tied for first on it. The default of method one-shot.
- `top1` (higher is better): the share of images classified right, in percent. The default of
  method train, whose scores differ by more than one image between candidates anyway.

Every score carries its standard error over the images it was measured on (`se`), and two
candidates scored on the same images compare by their per-image differences (`paired_difference`):
what is shared between them cancels, so the comparison is sharper than either score's own error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

LOSS, TOP1 = "loss", "top1"
METRICS = (LOSS, TOP1)
MINIMIZE, MAXIMIZE = "minimize", "maximize"
CONFIDENCE = 0.95  # of the paired comparison's interval, as everywhere in the report


@dataclass(frozen=True)
class Score:
    """One of METRICS, with the direction and words that go with it."""

    metric: str

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"score metric {self.metric!r} is not one of {list(METRICS)}")

    @property
    def direction(self) -> str:
        """Optuna's study direction for this score."""
        return MINIMIZE if self.metric == LOSS else MAXIMIZE

    @property
    def mode(self) -> str:
        """Ray Tune's mode for this score."""
        return "min" if self.metric == LOSS else "max"

    @property
    def se_key(self) -> str:
        """The key of this score's standard error in an evaluation's metrics."""
        return f"{self.metric}_se"

    @property
    def label(self) -> str:
        """What the score is, for a column header or an axis."""
        return "search-split loss (lower is better)" if self.metric == LOSS else "search-split top-1 (%)"

    @property
    def short(self) -> str:
        return "search loss" if self.metric == LOSS else "search top-1"

    def format(self, value: float) -> str:
        return f"{value:.4f}" if self.metric == LOSS else f"{value:.2f}%"

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` is strictly better than `b`."""
        return a < b if self.metric == LOSS else a > b

    def sort_key(self, value: float) -> float:
        """A key that sorts better scores first."""
        return value if self.metric == LOSS else -value

    def best(self, values: Sequence[float]) -> float:
        return min(values) if self.metric == LOSS else max(values)


def score_of_direction(direction: str) -> Score:
    """The score a single-objective study with `direction` ranks by (a study keeps no metric name; an
    Optuna study created before `search.score` existed maximized top-1)."""
    return Score(LOSS if direction == MINIMIZE else TOP1)


@dataclass(frozen=True)
class PairedDifference:
    """Candidate A's score minus candidate B's over the same images, with its 95% interval."""

    difference: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, paired t over images; NaN when every image differs by the same amount
    images: int  # the pairs: images (or, for trainings, the seeds they share)

    @property
    def distinguishable(self) -> bool:
        """Whether the interval excludes zero: the images tell the two apart."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """A minus B from per-image values of two candidates on the same images (paired t over images; the
    same test pairs per-seed scores of trainings that share their seeds)."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"a paired difference needs per-image values on the same images, got shapes "
                         f"{a_arr.shape} and {b_arr.shape}")
    if len(a_arr) < 2:
        raise ValueError(f"a paired difference needs at least 2 images, got {len(a_arr)}")
    d = a_arr - b_arr
    n, mean = len(d), float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n))
    if se == 0:
        return PairedDifference(mean, 0.0, mean, mean, math.nan, n)
    half = float(stats.t.ppf(1 - (1 - CONFIDENCE) / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return PairedDifference(mean, se, mean - half, mean + half, p, n)

