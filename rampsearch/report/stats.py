"""The statistics a comparison report needs: seed means, a difference with its 95% CI and test, Kendall's tau
with its bootstrap interval, and the noise ceiling of a ranking against seed means (split-half reliability)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

# Why a comparison has no test (shown as "no test (...)" instead of a p-value).
ONE_SEED = "1 seed"  # a t-test needs two or more seeds per schedule
NO_VARIANCE = "no variance"  # every seed differs by the same amount: t is undefined


@dataclass(frozen=True)
class Comparison:
    """Schedule A minus schedule B, over seeds."""

    mean_a: float
    std_a: float
    mean_b: float
    std_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float  # NaN when no test exists (see `no_test`)
    test: str  # the test that applies to these samples: "paired t" or "Welch t"
    n: int  # seeds per side (the smaller side for Welch)
    no_test: str | None = None  # why there is no test ("1 seed", "no variance"), None when tested

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05  # False for NaN: no test, no claim

    def test_result(self) -> str:
        """The test actually run with its p-value ("paired t p=0.0412"), or "no test (1 seed)"."""
        return f"no test ({self.no_test})" if self.no_test else f"{self.test} p={self.p_value:.3g}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def compare(a: Sequence[float], b: Sequence[float], paired: bool = True, confidence: float = 0.95) -> Comparison:
    """Difference of means of A and B with a t-based confidence interval and two-sided p-value.

    Paired (a[i] and b[i] share seed i, as retraining does): a paired t-test on the per-seed
    differences. Unpaired: Welch's t-test. With fewer than two values per side no interval or
    test exists: the CI is infinite, p is NaN and `no_test` says "1 seed". When every seed differs
    by exactly the same amount the t statistic is undefined (not infinite): the CI is that one
    difference, p is NaN and `no_test` says "no variance". A NaN p is never significant.
    """
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    (mean_a, std_a), (mean_b, std_b) = mean_std(a_arr), mean_std(b_arr)
    diff = mean_a - mean_b
    alpha = 1 - confidence
    if paired:
        if len(a_arr) != len(b_arr):
            raise ValueError(f"paired comparison needs equal numbers of seeds, got {len(a_arr)} and {len(b_arr)}")
        d = a_arr - b_arr
        n = len(d)
        if n < 2:
            return Comparison(mean_a, std_a, mean_b, std_b, diff, -math.inf, math.inf, math.nan, "paired t", n,
                              ONE_SEED)
        se = d.std(ddof=1) / math.sqrt(n)
        if se == 0:  # every seed differs by the same amount: the t statistic is undefined, not infinite
            return Comparison(mean_a, std_a, mean_b, std_b, diff, diff, diff, math.nan, "paired t", n, NO_VARIANCE)
        half = stats.t.ppf(1 - alpha / 2, n - 1) * se
        p = float(stats.ttest_rel(a_arr, b_arr).pvalue)
        return Comparison(mean_a, std_a, mean_b, std_b, diff, diff - half, diff + half, p, "paired t", n)
    na, nb = len(a_arr), len(b_arr)
    if na < 2 or nb < 2:
        return Comparison(mean_a, std_a, mean_b, std_b, diff, -math.inf, math.inf, math.nan, "Welch t", min(na, nb),
                          ONE_SEED)
    va, vb = std_a ** 2 / na, std_b ** 2 / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Comparison(mean_a, std_a, mean_b, std_b, diff, diff, diff, math.nan, "Welch t", min(na, nb),
                          NO_VARIANCE)
    dof = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(1 - alpha / 2, dof) * se
    p = float(stats.ttest_ind(a_arr, b_arr, equal_var=False).pvalue)
    return Comparison(mean_a, std_a, mean_b, std_b, diff, diff - half, diff + half, p, "Welch t", min(na, nb))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b between two scorings of the same schedules, and its two-sided p-value.

    NaN when fewer than two schedules (no ranking to compare).
    """
    if len(x) != len(y):
        raise ValueError(f"need the same schedules in both scorings, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan, math.nan
    result = stats.kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def tau_bootstrap_ci(x: Sequence[float], y: Sequence[float], resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Kendall's tau between `x` and `y`, resampling schedules.

    Each resample draws len(x) schedule indices with replacement; a resample whose tau is NaN (every
    drawn value tied) is skipped. (NaN, NaN) when no resample has a tau. Deterministic for a given `seed`.
    """
    if len(x) != len(y):
        raise ValueError(f"need the same schedules in both scorings, got {len(x)} and {len(y)}")
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(resamples):
        idx = rng.integers(0, len(xs), len(xs))
        tau, _ = kendall_tau(xs[idx], ys[idx])
        if not math.isnan(tau):
            taus.append(tau)
    if not taus:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(taus, [tail, 100 - tail])
    return float(low), float(high)


def _half_splits(seeds: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every unordered pair of disjoint halves of floor(seeds / 2) seeds each (for an odd count, one seed
    is left out, every choice of it in turn)."""
    half = seeds // 2
    splits = set()
    for first in itertools.combinations(range(seeds), half):
        rest = [s for s in range(seeds) if s not in first]
        for second in itertools.combinations(rest, half):
            splits.add(tuple(sorted((first, second))))
    return sorted(splits)


def split_half_reliability(scores: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Reliability of the seed mean as a ranking of schedules: `scores` is [schedules x seeds].

    Convention: the seeds are split into two halves of floor(n/2) seeds each (every split; for an odd
    n one seed is left out, each in turn); for each split, the Pearson correlation across schedules of
    the two half-means; the mean r over splits (NaN ones, from a constant half-mean, skipped) is
    stepped up to all n seeds by Spearman-Brown, k r / (1 + (k - 1) r) with k = n / floor(n/2) (for
    even n, 2r / (1 + r)). A non-positive r is returned unchanged: the seeds share no ranking, and the
    step-up is meaningless there. NaN when every split is NaN. Raises ValueError for fewer than 2 seeds.
    """
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] < 2 or matrix.shape[0] < 2:
        raise ValueError(f"split-half reliability needs a [schedules x seeds] matrix with >= 2 schedules and "
                         f">= 2 seeds, got shape {matrix.shape}")
    seeds = matrix.shape[1]
    rs = []
    for first, second in _half_splits(seeds):
        a, b = matrix[:, list(first)].mean(axis=1), matrix[:, list(second)].mean(axis=1)
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            rs.append(float(np.corrcoef(a, b)[0, 1]))
    if not rs:
        return math.nan
    r = float(np.mean(rs))
    if r <= 0:
        return r
    k = seeds / (seeds // 2)
    return k * r / (1 + (k - 1) * r)


def tau_ceiling(reliability: float) -> float:
    """The highest Kendall tau a predictor can expect against a noisy seed mean of this reliability.

    Classical test theory: no predictor correlates with the noisy mean better than sqrt(reliability)
    (the mean's correlation with its own noise-free value); Greiner's relation tau = (2/pi) arcsin(r),
    exact for a bivariate normal, turns that correlation into tau. Reliability is clipped to [0, 1]
    (a ceiling of 0 for a non-positive one); NaN stays NaN.
    """
    if math.isnan(reliability):
        return math.nan
    r = math.sqrt(min(max(reliability, 0.0), 1.0))
    return 2 / math.pi * math.asin(r)
