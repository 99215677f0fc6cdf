"""Report statistics on inputs with known answers, and the spectral measure on known signals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rampsearch.report.frequency import relative_log_amplitude
from rampsearch.report.stats import (compare, kendall_tau, mean_std, split_half_reliability, tau_bootstrap_ci,
                                     tau_ceiling)


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_paired_comparison_known_values():
    # per-seed differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.302653
    c = compare([11.0, 12.0, 13.0], [10.0, 10.0, 10.0], paired=True)
    half = 4.302652729911275 / math.sqrt(3)
    assert c.difference == pytest.approx(2.0)
    assert (c.ci_low, c.ci_high) == pytest.approx((2 - half, 2 + half))
    # t = 2 / (1/sqrt 3) = 3.4641 with df 2: p = 1 - t / sqrt(2 + t^2) = 0.0742 (closed form for df 2)
    assert c.p_value == pytest.approx(1 - 3.4641016 / math.sqrt(2 + 12), abs=1e-6)
    assert not c.significant and c.test == "paired t"
    assert compare([12.0, 12.1, 11.9, 12.0], [10.0, 10.1, 10.0, 9.9]).significant


def test_welch_comparison_known_values():
    c = compare([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0], paired=False)
    # Welch: se = sqrt(1.6667/4 + 6.6667/4) = 1.4434, df = 4.41, t = -1.7321
    assert c.difference == pytest.approx(-2.5)
    assert c.p_value == pytest.approx(0.1499, abs=2e-3)
    assert not c.significant and c.ci_low < -2.5 < c.ci_high < 2


def test_comparison_with_one_seed_says_no_test():
    for c in (compare([50.0], [48.0]), compare([50.0], [48.0, 47.0], paired=False)):
        assert c.difference == pytest.approx(2.0 if c.test == "paired t" else 2.5)
        assert math.isinf(c.ci_low) and math.isnan(c.p_value) and not c.significant
        assert c.no_test == "1 seed" and c.test_result() == "no test (1 seed)"


def test_identical_differences_are_not_significant():
    c = compare([22.0, 27.0], [20.0, 25.0])  # +2 on both seeds: zero variance, t undefined
    assert c.difference == 2.0 and math.isnan(c.p_value) and not c.significant
    assert c.test_result() == "no test (no variance)"


def test_the_test_is_named_as_run():
    assert compare([11.0, 12.0, 13.0], [10.0, 10.0, 10.0]).test_result() == "paired t p=0.0742"
    assert compare([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0], paired=False).test_result().startswith("Welch t p=0.1")


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40])[0] == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10])[0] == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [10, 30, 20, 40])[0] == pytest.approx(2 / 3)  # 5 concordant, 1 discordant
    assert math.isnan(kendall_tau([1.0], [2.0])[0])



def test_tau_bootstrap_ci_brackets_the_point_tau_and_is_deterministic():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    y = [10.0, 30.0, 20.0, 40.0, 50.0, 70.0, 60.0, 80.0]
    tau = kendall_tau(x, y)[0]
    low, high = tau_bootstrap_ci(x, y, resamples=500, seed=3)
    assert low <= tau <= high <= 1.0
    assert tau_bootstrap_ci(x, y, resamples=500, seed=3) == (low, high)
    assert tau_bootstrap_ci(x, [2 * v for v in x], resamples=200) == (1.0, 1.0)  # monotone: every resample is 1
    assert all(math.isnan(v) for v in tau_bootstrap_ci([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], resamples=50))


def test_split_half_reliability_by_hand():
    # 3 schedules x 2 seeds: halves are the seeds, [1, 2, 3] and [2, 1, 3]; deviations from the mean 2 are
    # [-1, 0, 1] and [0, -1, 1]: r = 1 / sqrt(2 * 2) = 0.5, stepped up to 2 seeds: 2 * 0.5 / 1.5 = 2/3
    assert split_half_reliability([[1, 2], [2, 1], [3, 3]]) == pytest.approx(2 / 3)
    # 4 x 2: seed 0 [1, 2, 3, 4], seed 1 [1, 3, 2, 4]: deviations [-1.5, -.5, .5, 1.5] and [-1.5, .5, -.5, 1.5],
    # products 2.25 - .25 - .25 + 2.25 = 4 over a sum of squares of 5 each: r = 0.8, stepped up 1.6 / 1.8 = 8/9
    assert split_half_reliability(np.array([[1, 1], [2, 3], [3, 2], [4, 4]])) == pytest.approx(8 / 9)
    # 3 seeds: halves of one seed, the third left out in turn; seeds 0 and 1 agree (r = 1), seed 2 is the
    # reverse of both (r = -1 twice): mean r = -1/3, not stepped up
    assert split_half_reliability([[1, 1, 3], [2, 2, 2], [3, 3, 1]]) == pytest.approx(-1 / 3)
    # 3 seeds, r 1, 0.5, 0.5 (seed 2 = [2, 1, 3] against [1, 2, 3] twice): mean 2/3, k = 3: 2 / (1 + 4/3) = 6/7
    assert split_half_reliability([[1, 1, 2], [2, 2, 1], [3, 3, 3]]) == pytest.approx(6 / 7)


def test_perfectly_reliable_seeds_reach_a_ceiling_of_one():
    scores = [[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0], [30.0, 31.0, 32.0, 33.0]]  # seeds only shift
    assert split_half_reliability(scores) == pytest.approx(1.0)
    assert tau_ceiling(1.0) == pytest.approx(1.0)


def test_tau_ceiling_known_values():
    assert tau_ceiling(0.5) == pytest.approx(0.5)  # sqrt(0.5) = sin(pi/4): (2/pi) * (pi/4)
    assert tau_ceiling(0.75) == pytest.approx(2 / 3)  # sqrt(0.75) = sin(pi/3): (2/pi) * (pi/3)
    assert tau_ceiling(0.0) == 0.0 and tau_ceiling(-0.3) == 0.0
    assert math.isnan(tau_ceiling(math.nan))


def test_split_half_reliability_needs_two_seeds():
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        split_half_reliability([[1.0], [2.0], [3.0]])
    with pytest.raises(ValueError, match="shape"):
        split_half_reliability([1.0, 2.0, 3.0])

def test_high_frequency_maps_keep_more_energy_at_pi():
    h = w = 16
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    smooth = torch.cos(2 * math.pi * xx / w)[None, :, :, None].expand(2, h, w, 4) + 3
    checker = ((yy + xx) % 2 * 2 - 1).float()[None, :, :, None].expand(2, h, w, 4) + 3
    noise = torch.randn(2, h, w, 4) * 0.01
    smooth_curve = relative_log_amplitude(smooth + noise)
    checker_curve = relative_log_amplitude(checker + noise)
    assert smooth_curve[0] == 0 and len(smooth_curve) == h // 2 + 1
    assert checker_curve[-1] > smooth_curve[-1] + 3  # the checkerboard's energy sits at pi
    assert np.all(np.isfinite(checker_curve))
