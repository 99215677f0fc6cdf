"""A verdict that knows its power: the detectable difference and the seeds a difference needs, the
sequential rule of `seeds: auto` (valid under repeated looks), shared seeds across schedules, and the
auto-seeds retraining end to end (resumable after kill -9)."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from devices import TEST_DEVICE  # tests/devices.py
from rampsearch.architecture import Architecture
from rampsearch.config import TrainConfig
from rampsearch.model_spec import ModelSpec, build_model
from rampsearch.ramp import RampSchedule
from rampsearch.report import build_report
from rampsearch.report.sections.summary import power_words
from rampsearch.report.stats import Power, detectable_difference, power_of, seeds_needed
from rampsearch.retrain import STOPPING, run_retrain
from rampsearch.search import SearchOptions, run_search
from rampsearch.sequential import ALPHA, SequentialPlan, first_decision, look
from rampsearch.train import _Trainer, _reseed, _share_initial_weights, fit

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
CLI = [sys.executable, str(ROOT / "cli.py")]
TINY_ARCH = Architecture.from_dict({"depths": [1, 1, 1, 1], "embed_dims": [32, 32, 64, 64]})
TINY_DATA = {"synthetic_low_classes": 2, "synthetic_high_classes": 2, "synthetic_train_per_class": 24,
             "synthetic_val_per_class": 8, "batch_size": 16, "warmup_epochs": 0.5, "workers": 0}


# -- power --------------------------------------------------------------------------------------

def test_detectable_difference_matches_the_textbook_sample_sizes():
    # Cohen's tables (and G*Power): a paired t-test needs 10 pairs for d = 1 and 34 for d = 0.5 (two-sided
    # 5%, 80% power); a two-sample t-test needs 17 per group for d = 1, i.e. a per-seed difference of sd sqrt(2).
    assert detectable_difference(1.0, 10) == pytest.approx(0.9957, abs=1e-3)
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(0.5, 1.0) == 34
    assert seeds_needed(1.0, math.sqrt(2), paired=False) == 17
    assert detectable_difference(2.0, 10) == pytest.approx(2 * detectable_difference(1.0, 10))  # scales with sd


def test_detectable_difference_is_detected_with_80_percent_power_in_simulation():
    rng = np.random.default_rng(0)
    for n in (2, 3, 6):
        delta = detectable_difference(1.0, n)
        samples = rng.normal(delta, 1.0, size=(40_000, n))
        t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(n))
        rejected = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
        assert rejected == pytest.approx(0.80, abs=0.01), n  # 3 standard errors of 40,000 draws is 0.006


def test_one_seed_detects_nothing_and_more_seeds_detect_less():
    assert detectable_difference(1.0, 1) == math.inf and math.isnan(detectable_difference(0.0, 5))
    sizes = [detectable_difference(1.0, n) for n in (2, 3, 4, 8, 16)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 10 * sizes[1] / 3  # 2 seeds: 1 degree of freedom
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(1e-3, 1.0) is None  # more than the cap


def test_power_of_uses_the_paired_differences_when_seeds_are_shared():
    best, handset = [57.0, 36.6], [50.0, 45.0]  # the two seeds: a difference sd of 10.9 points
    paired = power_of(best, handset)
    assert paired.sd == pytest.approx(np.std([7.0, -8.4], ddof=1)) and paired.n == 2
    assert paired.detectable == pytest.approx(detectable_difference(paired.sd, 2)) and paired.detectable > 100
    unpaired = power_of(best, handset + [47.0], paired=False)
    assert unpaired.sd == pytest.approx(math.hypot(np.std(best, ddof=1), np.std(handset + [47.0], ddof=1)))
    assert power_of([50.0], [49.0]).detectable == math.inf


def test_power_words_say_plainly_what_one_two_and_many_seeds_can_decide():
    one = power_words(power_of([50.0], [49.0]), 1.0)
    assert one.startswith("With 1 seed this run cannot detect a difference of any size")
    two = power_words(power_of([57.0, 36.6], [50.0, 45.0]), -0.7)
    assert "With 2 seeds this run could only detect differences above 125.77 points" in two
    assert "cannot decide anything smaller" in two and "would need more than 1000 seeds" in two
    many = power_of([50.0, 53.0, 47.0, 52.0, 48.0, 51.0], [49.0, 50.0, 48.0, 51.0, 49.0, 50.0])
    words = power_words(many, 2 / 3)  # per-seed differences 1, 3, -1, 1, -1, 1
    assert f"With 6 seeds this run could only detect differences above {many.detectable:.2f} points" in words
    assert f"would need about {many.seeds_for_observed} seeds" in words and many.seeds_for_observed > 6
    flat = power_words(Power(math.nan, 3, True, math.nan, None), 1.0)
    assert "no spread was measured" in flat


# -- the sequential rule --------------------------------------------------------------------------

def test_alpha_is_spent_by_the_power_family_and_sums_to_alpha():
    plan = SequentialPlan(max_seeds=8)  # looks at 3..8 seeds: K = 6
    spent = [plan.alpha_at(n) for n in range(3, 9)]
    assert spent == pytest.approx([ALPHA * (2 * k - 1) / 36 for k in range(1, 7)])  # (k/6)^2 - ((k-1)/6)^2
    assert sum(spent) == pytest.approx(ALPHA)
    assert SequentialPlan(max_seeds=3).alpha_at(3) == pytest.approx(ALPHA)  # one look: the fixed-n test
    with pytest.raises(ValueError, match="no look at 2 seeds"):
        plan.alpha_at(2)
    with pytest.raises(ValueError, match="min_seeds <= max_seeds"):
        SequentialPlan(max_seeds=2)


def test_a_look_is_the_t_interval_at_its_spent_level():
    only = look([1.0, 2.0, 3.0], SequentialPlan(max_seeds=3))  # mean 2, sd 1, t(0.975, 2) = 4.3027
    half = 4.302653 / math.sqrt(3)
    assert (only.ci_low, only.ci_high) == pytest.approx((2 - half, 2 + half), abs=1e-5) and only.decided is False
    wide = look([1.0, 2.0, 3.0], SequentialPlan(max_seeds=8))  # the first of 6 looks spends 0.05/36
    assert wide.ci_high - wide.ci_low > only.ci_high - only.ci_low and wide.alpha == pytest.approx(ALPHA / 36)
    assert look([2.0, 2.1, 1.9], SequentialPlan(max_seeds=3)).decided


def test_stopping_at_the_first_decided_look_keeps_false_positives_at_5_percent():
    """Equal schedules (true difference 0), a look after every seed from 3 to 8: the sequential rule stays at
    or below 5%; the naive t-test after every seed does not (why the rule exists)."""
    plan, rng, runs = SequentialPlan(max_seeds=8), np.random.default_rng(1), 6000
    differences = rng.normal(0.0, 3.0, size=(runs, 8))
    sequential = np.mean([first_decision(d, plan) is not None for d in differences])
    rejects = [np.abs(differences[:, :n].mean(1) / (differences[:, :n].std(1, ddof=1) / math.sqrt(n)))
               > stats.t.ppf(1 - ALPHA / 2, n - 1) for n in range(3, 9)]
    naive = np.mean(np.any(rejects, axis=0))  # a fixed-n t-test after every seed
    assert sequential <= ALPHA + 2.33 * math.sqrt(ALPHA * (1 - ALPHA) / runs)  # one-sided 99% sampling error
    assert naive > 0.09


def test_the_rule_decides_a_real_difference():
    rng = np.random.default_rng(2)
    decided = [first_decision(rng.normal(2.0, 1.0, size=8), SequentialPlan(max_seeds=8)) for _ in range(200)]
    assert np.mean([d is not None for d in decided]) > 0.9
    assert all(d.difference > 0 for d in decided if d is not None)


# -- the same seed, the same draw across schedules ------------------------------------------------

def _other_ramp() -> RampSchedule:
    handset = RampSchedule.handset(TINY_ARCH)
    heads = list(handset.high_heads(TINY_ARCH))
    heads[-1] = 0 if heads[-1] else 1  # the last block's split moves; every other block keeps its shapes
    return RampSchedule.from_high_heads(TINY_ARCH, heads)


def test_a_seed_gives_every_ramp_the_hand_set_ramps_initial_weights_where_shapes_agree():
    handset_spec = ModelSpec.iformer(TINY_ARCH, None, 32)
    other_spec = ModelSpec.iformer(TINY_ARCH, _other_ramp(), 32)
    _reseed(3, 0)
    handset = build_model(handset_spec, 4).state_dict()
    _reseed(3, 0)
    other = build_model(other_spec, 4)
    unshared = {k: v.clone() for k, v in other.state_dict().items()}
    copied = _share_initial_weights(other, other_spec, 4, 0.0, seed=3)
    shared = other.state_dict()
    same_shape = [k for k in shared if k in handset and shared[k].shape == handset[k].shape]
    assert copied == len(same_shape) and len(same_shape) < len(shared)  # the moved block's mixer differs
    assert all(torch.equal(shared[k], handset[k]) for k in same_shape)
    assert not all(torch.equal(unshared[k], handset[k]) for k in same_shape)  # unshared: another random draw
    again = build_model(handset_spec, 4)
    assert _share_initial_weights(again, handset_spec, 4, 0.0, seed=3) == 0  # the hand-set ramp is untouched


def test_a_seed_fixes_data_order_augmentation_and_mixup_across_ramps(monkeypatch):
    batches: list[list[tuple[float, float]]] = []
    original = _Trainer._backward

    def record(self, images, target, key):
        batches[-1].append((float(images.double().sum()), float(target.double().sum())))
        return original(self, images, target, key)

    monkeypatch.setattr(_Trainer, "_backward", record)
    mixing = {**TINY_DATA, "mixup": 0.8, "cutmix": 1.0, "mixup_prob": 1.0, "reprob": 0.25, "hflip": 0.5}
    for ramp in (None, _other_ramp(), None):
        batches.append([])
        fit(TrainConfig(architecture=TINY_ARCH.to_dict(), ramp="handset" if ramp is None else list(ramp.ratios),
                        img_size=32, device=TEST_DEVICE, quiet=True, epochs=2, seed=4, overrides=mixing))
    assert batches[0] == batches[1] == batches[2] and len(batches[0]) == 2 * 6  # 96 images in batches of 16


# -- seeds: auto, end to end ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("auto") / "run"
    run_search(TINY, run_dir, SearchOptions(trials=3, study="tiny"), "optuna", show_progress=False,
               log=lambda m: None)
    return run_dir


def _auto(run_dir: Path, **given) -> pd.DataFrame:
    return run_retrain(run_dir, top=1, seeds="auto", epochs=1, log=lambda m: None, **{"max_seeds": 3, **given})


def test_auto_seeds_train_rounds_until_the_cap_and_say_why(searched, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(searched, run)
    frame = _auto(run)
    stopping = json.loads((run / "retrain" / STOPPING).read_text())
    assert stopping["reason"] in ("decided", "max_seeds") and stopping["seeds"] == 3
    assert len(stopping["looks"]) == 1 and stopping["rule"]["max_seeds"] == 3  # one look, at 3 seeds
    assert sorted(frame.groupby("name")["seed"].apply(list).tolist()) == [[0, 1, 2], [0, 1, 2]]
    assert frame["name"].tolist() == ["handset"] * 3 + ["best"] * 3  # results.csv keeps schedule order
    differences = (frame[frame["name"] == "best"]["top1"].to_numpy() - frame[frame["name"] == "handset"]["top1"]
                   .to_numpy())
    expected = look(differences, SequentialPlan(max_seeds=3))
    assert stopping["looks"][0]["ci_low"] == pytest.approx(expected.ci_low)
    assert (stopping["reason"] == "decided") == expected.decided
    verdict = build_report(run, frequency_images=8)["verdict"]
    assert f"95% CI [{expected.ci_low:+.2f}, {expected.ci_high:+.2f}] adjusted for 1 look (seeds: auto)" in verdict
    assert f"Seeds: auto stopped after 3 seeds: {stopping['sentence']}." in verdict


def test_auto_seeds_start_no_round_past_max_hours(searched, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(searched, run)
    frame = _auto(run, max_hours=1e-6)
    stopping = json.loads((run / "retrain" / STOPPING).read_text())
    assert stopping["reason"] == "max_hours" and stopping["seeds"] == 1 and frame["seed"].max() == 0
    assert "max_hours 1e-06" in stopping["sentence"]


def test_a_fixed_number_of_seeds_leaves_no_stopping_record(searched, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(searched, run)
    _auto(run, max_hours=1e-6)
    run_retrain(run, top=1, seeds=1, epochs=1, log=lambda m: None)
    assert not (run / "retrain" / STOPPING).exists()


def test_auto_seeds_resume_after_kill_9_with_the_same_answer(searched, tmp_path):
    uninterrupted = tmp_path / "whole"
    shutil.copytree(searched, uninterrupted)
    expected = _auto(uninterrupted)
    killed = tmp_path / "killed"
    shutil.copytree(searched, killed)
    command = [*CLI, "retrain", str(killed), "--top", "1", "--seeds", "auto", "--max-seeds", "3", "--epochs", "1",
               "--quiet"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (killed / "retrain" / "best" / "seed0" / "result.json").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "retrain" / STOPPING).exists()
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = pd.read_csv(killed / "retrain" / "results.csv")
    columns = ["name", "seed", "top1", "loss"]
    pd.testing.assert_frame_equal(results[columns], expected[columns].reset_index(drop=True))
    assert json.loads((killed / "retrain" / STOPPING).read_text())["looks"] == \
        json.loads((uninterrupted / "retrain" / STOPPING).read_text())["looks"]


def test_cli_refuses_bad_seed_settings_in_one_line(searched):
    for flags, message in ((["--seeds", "many"], "expected an integer >= 1 or auto, got 'many'"),
                           (["--max-seeds", "2"], "expected an integer >= 3, got 2"),
                           (["--max-hours", "0"], "expected a number > 0, got 0")):
        result = subprocess.run([*CLI, "retrain", str(searched), *flags], capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr, flags
