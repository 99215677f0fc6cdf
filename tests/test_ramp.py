"""RampSchedule: validation messages, channel conversion, files, presets, continuous ramps."""
from __future__ import annotations

import json

import pytest

from rampsearch import Architecture, ContinuousRamp, RampError, RampSchedule, load_ramp
from rampsearch.ramp import resolve_ramp

SMALL = Architecture.resolve("small")


def test_wrong_length_says_how_many_blocks():
    with pytest.raises(RampError, match=r"has 3 values but the architecture has 18 blocks \(depths 3\+3\+9\+3\)"):
        RampSchedule((0.5, 0.5, 0.5)).channels(SMALL)


@pytest.mark.parametrize("bad", [-0.2, 1.3, float("nan")])
def test_ratio_outside_unit_interval(bad):
    ratios = list(RampSchedule.handset(SMALL).ratios)
    ratios[4] = bad
    with pytest.raises(RampError, match=r"block 4 \(stage 2, C=192\): ratio .* outside \[0, 1\]"):
        RampSchedule(tuple(ratios)).channels(SMALL)


def test_unrepresentable_ratio_names_block_and_nearest_values():
    ratios = list(RampSchedule.handset(SMALL).ratios)
    ratios[6] = 0.25
    with pytest.raises(RampError, match=r"block 6 \(stage 3, C=320\): ratio 0.25 .* nearest valid values: 0.2, 0.3"):
        RampSchedule(tuple(ratios)).channels(SMALL)


def test_channels_round_trip_and_formula():
    ramp = RampSchedule.handset(SMALL)
    channels = ramp.channels(SMALL)
    assert RampSchedule.from_channels(SMALL, [c for c, _ in channels]) == ramp
    for (c_h, c_l), r, width in zip(channels, ramp.ratios, SMALL.block_widths):
        assert c_l == round((1 - r) * width / 32) * 32 and c_h + c_l == width


def test_pure_branches_are_valid():
    assert RampSchedule((0.0,) * 18).channels(SMALL)[0] == (0, 96)
    assert RampSchedule((1.0,) * 18).channels(SMALL)[-1] == (384, 0)


def test_two_decimal_and_fraction_input():
    ramp = load_ramp("0.67,2/3,0.67,0.5,0.5,0.5,0.3,0.3,0.3,0.3,0.1,0.1,0.1,0.1,0.1,1/12,0.08,0.08", SMALL)
    assert ramp.high_heads(SMALL) == RampSchedule.handset(SMALL).high_heads(SMALL)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    ramp = RampSchedule.handset(SMALL)
    path = tmp_path / f"ramp{suffix}"
    ramp.save(path, SMALL)
    if suffix == ".json":
        assert json.loads(path.read_text())["high_channels"][0] == 64
    assert load_ramp(str(path), SMALL) == ramp


def test_bad_ramp_files(tmp_path):
    with pytest.raises(RampError, match="does not exist"):
        load_ramp(str(tmp_path / "missing.yaml"), SMALL)
    bad = tmp_path / "bad.yaml"
    bad.write_text("ratios: [0.5]\n")
    with pytest.raises(RampError, match="exactly one of the keys 'ramp'"):
        load_ramp(str(bad), SMALL)
    with pytest.raises(RampError, match="comma-separated ratios"):
        load_ramp("0.5,abc", SMALL)


def test_continuous_ramp_transfers_across_depths():
    curve = ContinuousRamp(((0.0, 0.7), (0.5, 0.3), (1.0, 0.05)))
    nano = Architecture.resolve("nano")
    large = Architecture.resolve("large")
    for arch in (nano, SMALL, large):
        ramp = curve.instantiate(arch)
        ramp.channels(arch)  # valid for every block
        n = arch.num_blocks
        for i, (ratio, width) in enumerate(zip(ramp.ratios, arch.block_widths)):
            assert abs(ratio - curve.value((i + 0.5) / n)) <= 0.5 * 32 / width + 1e-9  # nearest head
    assert curve.value(0.25) == pytest.approx(0.5)
    with pytest.raises(RampError, match="increase strictly"):
        ContinuousRamp(((0.5, 0.3), (0.2, 0.1)))
    with pytest.raises(RampError, match=r"lie in \[0, 1\]"):
        ContinuousRamp(((0.0, 1.5),))


def test_resolve_rejects_strings():
    with pytest.raises(RampError, match="load_ramp"):
        resolve_ramp("handset", SMALL)


def test_paper_style_for_other_architectures():
    arch = Architecture((2, 2, 6, 2), (64, 128, 256, 320))
    ramp = RampSchedule.handset(arch)
    ratios = ramp.ratios
    assert all(0 < r < 1 for r in ratios)
    assert list(ratios) == sorted(ratios, reverse=True)  # high share falls with depth


def test_architecture_errors():
    from rampsearch import ArchitectureError

    with pytest.raises(ArchitectureError, match="not a multiple of head_dim=32"):
        Architecture((1, 1, 1, 1), (48, 64, 96, 128))
    with pytest.raises(ArchitectureError, match="4 positive integers"):
        Architecture((1, 1, 1), (32, 64, 96))
    with pytest.raises(ArchitectureError, match="unknown variant 'tiny'"):
        Architecture.resolve("tiny")
