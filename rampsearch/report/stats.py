"""The statistics a comparison report needs: seed means, a difference with its 95% CI and test, Kendall's tau
with its bootstrap interval, and the noise ceiling of a ranking against seed means (split-half reliability)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import integrate, optimize, stats

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


# -- power ----------------------------------------------------------------------------------------
# Power convention: a two-sided t-test at ALPHA detects a true difference with probability POWER.
ALPHA = 0.05
POWER = 0.80
MAX_SEEDS_NEEDED = 1000  # beyond this many seeds `seeds_needed` answers None: no practical run decides it


def _power(difference: float, sd: float, n: int, dof: float, alpha: float) -> float:
    """Probability that a two-sided t-test at `alpha` rejects when the true difference is `difference`, the
    per-seed standard deviation of a difference is `sd` and the mean is over `n` seeds.

    The noncentral t's two tails; where scipy's nct returns NaN (its far tails at 1 degree of freedom,
    exactly where two seeds need an answer), the same probability integrated over the spread estimate:
    T = (Z + shift) / S with S^2 a chi-square over `dof`, P(|T| > c) = E_S[P(Z > cS - shift) + P(Z < -cS - shift)].
    """
    critical = stats.t.ppf(1 - alpha / 2, dof)
    shift = difference / (sd / math.sqrt(n))
    tails = stats.nct.sf(critical, dof, shift) + stats.nct.cdf(-critical, dof, shift)
    if not math.isnan(tails):
        return float(tails)
    root = math.sqrt(dof)

    def rejected(s: float) -> float:  # s = S: chi(dof) / sqrt(dof), its density by change of variable
        density = stats.chi.pdf(s * root, dof) * root
        return (stats.norm.sf(critical * s - shift) + stats.norm.cdf(-critical * s - shift)) * density

    return float(integrate.quad(rejected, 0.0, math.inf)[0])


def _dof(n: int, paired: bool) -> float:
    return n - 1 if paired else 2 * n - 2


def detectable_difference(sd: float, n: int, paired: bool = True, alpha: float = ALPHA,
                          power: float = POWER) -> float:
    """The smallest true difference a t-test over `n` seeds detects with `power` at two-sided `alpha`.

    `sd` is the standard deviation of one seed's difference: of the per-seed paired differences when
    both schedules share seeds (paired t, n - 1 degrees of freedom), else sqrt(sd_a^2 + sd_b^2) with `n`
    seeds per side (two-sample t, 2n - 2 degrees of freedom). Exact under normal seed noise: the
    difference where the noncentral t reaches `power`. inf with fewer than 2 seeds (no test exists,
    so nothing is detectable); NaN when sd is 0 or NaN (no spread was measured).
    """
    if n < 2:
        return math.inf
    if not sd > 0:
        return math.nan
    dof = _dof(n, paired)
    high = sd
    while _power(high, sd, n, dof, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda d: _power(d, sd, n, dof, alpha) - power, 0.0, high, xtol=1e-10 * high))


def seeds_needed(difference: float, sd: float, paired: bool = True, alpha: float = ALPHA,
                 power: float = POWER) -> int | None:
    """The fewest seeds whose t-test detects `difference` with `power` (same `sd` as
    `detectable_difference`); None when the difference is 0 or NaN, sd is unknown, or more than
    MAX_SEEDS_NEEDED seeds would be needed."""
    if not sd > 0 or not abs(difference) > 0:
        return None
    low, high = 2, 2
    while detectable_difference(sd, high, paired, alpha, power) > abs(difference):
        if high >= MAX_SEEDS_NEEDED:
            return None
        low, high = high, min(2 * high, MAX_SEEDS_NEEDED)
    while low < high:  # detectable_difference falls as n grows: the first n that reaches |difference|
        middle = (low + high) // 2
        if detectable_difference(sd, middle, paired, alpha, power) <= abs(difference):
            high = middle
        else:
            low = middle + 1
    return high


@dataclass(frozen=True)
class Power:
    """What a comparison of A and B over seeds could detect (two-sided ALPHA, POWER)."""

    sd: float  # per-seed standard deviation of a difference (NaN with fewer than 2 seeds)
    n: int
    paired: bool
    detectable: float  # smallest true difference detectable with these seeds (inf with one seed)
    seeds_for_observed: int | None  # seeds the observed difference would need (None: see seeds_needed)


def power_of(a: Sequence[float], b: Sequence[float], paired: bool = True) -> Power:
    """The detectable difference and the seeds the observed difference needs, from the measured spread:
    of the per-seed differences when paired, of each side's scores otherwise."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a_arr) if paired else min(len(a_arr), len(b_arr))
    if paired:
        if len(a_arr) != len(b_arr):
            raise ValueError(f"paired power needs equal numbers of seeds, got {len(a_arr)} and {len(b_arr)}")
        sd = float((a_arr - b_arr).std(ddof=1)) if n > 1 else math.nan
    else:
        sd = math.hypot(mean_std(a_arr)[1], mean_std(b_arr)[1]) if n > 1 else math.nan
    difference = float(a_arr.mean() - b_arr.mean())
    return Power(sd, n, paired, detectable_difference(sd, n, paired) if n > 1 else math.inf,
                 seeds_needed(difference, sd, paired))
