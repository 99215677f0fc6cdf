"""The statistics a comparison report needs: seed means, a difference with its 95% CI and test, Kendall's tau."""
from __future__ import annotations

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
