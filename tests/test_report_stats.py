"""Report statistics on inputs with known answers, and the spectral measure on known signals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rampsearch.report.frequency import relative_log_amplitude
from rampsearch.report.stats import compare, kendall_tau, mean_std


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
