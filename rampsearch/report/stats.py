"""The statistics a comparison report needs: seed means, a difference with its 95% CI and test, Kendall's tau."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


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
    p_value: float
    test: str
    n: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05  # False for NaN: no test, no claim


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def compare(a: Sequence[float], b: Sequence[float], paired: bool = True, confidence: float = 0.95) -> Comparison:
    """Difference of means of A and B with a t-based confidence interval and two-sided p-value.

    Paired (a[i] and b[i] share seed i, as retraining does): a paired t-test on the per-seed
    differences. Unpaired: Welch's t-test. With fewer than two values per side no interval or
    test exists; the CI is then infinite and p = 1, stated rather than guessed.
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
            return Comparison(mean_a, std_a, mean_b, std_b, diff, -math.inf, math.inf, 1.0, "paired t (n<2)", n)
        se = d.std(ddof=1) / math.sqrt(n)
        if se == 0:  # every seed differs by the same amount: the t statistic is undefined, not infinite
            return Comparison(mean_a, std_a, mean_b, std_b, diff, diff, diff, math.nan, "paired t (no variance)", n)
        half = stats.t.ppf(1 - alpha / 2, n - 1) * se
        p = float(stats.ttest_rel(a_arr, b_arr).pvalue)
        return Comparison(mean_a, std_a, mean_b, std_b, diff, diff - half, diff + half, p, "paired t", n)
    na, nb = len(a_arr), len(b_arr)
    if na < 2 or nb < 2:
        return Comparison(mean_a, std_a, mean_b, std_b, diff, -math.inf, math.inf, 1.0, "Welch t (n<2)", min(na, nb))
    va, vb = std_a ** 2 / na, std_b ** 2 / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Comparison(mean_a, std_a, mean_b, std_b, diff, diff, diff, math.nan, "Welch t (no variance)",
                          min(na, nb))
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
