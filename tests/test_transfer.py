"""Transfer of searched ramps onto a target architecture: the mapping, the snapping, the budget, the workflow."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rampsearch.architecture import Architecture
from rampsearch.flops import estimate_flops
from rampsearch.ramp import RampError, RampSchedule, transfer_ramp, transfer_ratios
from rampsearch.search.load import load_space, parse_space
from rampsearch.search.space import Budget, SpaceError, Target
from rampsearch.transfer import Transfer, TransferError, fit_budget, resolve_target, retrain_dir

ROOT = Path(__file__).resolve().parents[1]
NANO, SMALL, BASE, LARGE = (Architecture.resolve(v) for v in ("nano", "small", "base", "large"))
DEMO = ROOT / "search_spaces" / "demo_one_shot.yaml"


# -- the mapping ----------------------------------------------------------------------------------

def test_a_ramp_maps_onto_its_own_architecture_unchanged():
    for arch in (NANO, SMALL, BASE):
        ramp = RampSchedule.handset(arch)
        assert transfer_ramp(ramp, arch, arch) == ramp


def test_stage_boundaries_are_respected():
    """Each stage keeps its own ratios: a stage-constant ramp stays stage-constant on any depth."""
    per_stage = [1.0, 0.5, 0.0, 0.5]
    ramp = RampSchedule(tuple(per_stage[s] for s in NANO.block_stages))
    for target in (SMALL, BASE, LARGE):
        mapped = transfer_ramp(ramp, NANO, target)
        for s, ratios in enumerate(mapped.per_stage(target)):
            assert len(set(ratios)) == 1
            assert abs(ratios[0] - per_stage[s]) <= 0.5 / (target.embed_dims[s] // 32) + 1e-9


def test_within_a_stage_the_curve_is_interpolated_at_block_centres():
    # nano stage 3 (4 blocks, C=192: 6 heads): ratios 1, 2/3, 1/3, 0 at centres 1/8, 3/8, 5/8, 7/8
    ramp = RampSchedule((0.5, 0.5, 0.5, 0.5, 1.0, 4 / 6, 2 / 6, 0.0, 0.125, 0.125))
    values = transfer_ratios(ramp, NANO, SMALL)
    stage3 = values[6:15]  # iFormer-S stage 3: 9 blocks at centres (j + 0.5) / 9
    expected = []
    for j in range(9):
        u = (j + 0.5) / 9
        x = min(max(u, 1 / 8), 7 / 8)  # flat beyond the first and last centre
        expected.append(1.0 - (x - 1 / 8) / (6 / 8))  # the line through the four points
    assert stage3 == pytest.approx(expected)
    assert values[15:] == pytest.approx([0.125] * 3)


def test_mapped_ramps_snap_to_whole_heads_of_the_target():
    ramp = RampSchedule.handset(NANO)
    mapped = transfer_ramp(ramp, NANO, LARGE)
    heads = mapped.high_heads(LARGE)  # validates: every ratio is a whole number of heads
    assert len(heads) == LARGE.num_blocks
    for ratio, value, units in zip(mapped.ratios, transfer_ratios(ramp, NANO, LARGE), LARGE.block_units):
        assert abs(ratio - value) <= 0.5 / units + 1e-9  # the nearest snap


def test_a_ramp_that_does_not_fit_its_source_is_refused():
    with pytest.raises(RampError, match="10 blocks"):
        transfer_ratios(RampSchedule((0.5,) * 18), NANO, SMALL)


# -- the budget -----------------------------------------------------------------------------------

def test_a_ramp_within_budget_is_the_nearest_snap():
    values = transfer_ratios(RampSchedule.handset(NANO), NANO, SMALL)
    nearest = RampSchedule.snapped(SMALL, values)
    fitted, moved = fit_budget(values, SMALL, 224, Budget(gflops=100.0))
    assert (fitted, moved) == (nearest, 0)


def test_an_over_budget_ramp_moves_to_the_nearest_snap_within_it():
    values = [0.0] * SMALL.num_blocks  # all attention: stage-1 attention over 784 tokens is the costliest
    nearest = RampSchedule.snapped(SMALL, values)
    budget = Budget(gflops=estimate_flops("small", ramp=nearest) / 1e9 - 0.05)
    fitted, moved = fit_budget(values, SMALL, 224, budget)
    assert moved > 0
    assert estimate_flops("small", ramp=fitted) / 1e9 <= budget.gflops
    # only as far as needed: one head fewer would be over budget again
    changed = [b for b, (a, f) in enumerate(zip(nearest.ratios, fitted.ratios)) if a != f]
    assert 0 < len(changed) <= moved
    heads = list(fitted.high_heads(SMALL))
    for b in changed:
        undone = heads.copy()
        undone[b] -= 1
        assert estimate_flops("small", ramp=RampSchedule.from_high_heads(SMALL, undone)) / 1e9 > budget.gflops


def test_params_budgets_are_met_too():
    values = [1.0] * SMALL.num_blocks  # all conv: the most parameters (fuse and projection on 2 C_h)
    nearest = RampSchedule.snapped(SMALL, values)
    from rampsearch.flops import flops_model

    model = flops_model(SMALL, 224, 1000)
    params = model.params_of_heads(nearest.high_heads(SMALL))
    fitted, moved = fit_budget(values, SMALL, 224, Budget(mparams=params / 1e6 - 0.2))
    assert moved > 0 and model.params_of_heads(fitted.high_heads(SMALL)) / 1e6 <= params / 1e6 - 0.2


def test_a_budget_no_ramp_meets_is_a_clear_error():
    with pytest.raises(TransferError, match=r"no ramp of the target .* fits the budget \(0.1 GFLOPs\).*larger"):
        fit_budget([0.5] * SMALL.num_blocks, SMALL, 224, Budget(gflops=0.1))


def test_the_default_target_budget_keeps_the_searchs_headroom():
    space = load_space(DEMO)  # budget 0.0925 GFLOPs, the nano hand-set ramp is 0.0923 at 64 px
    transfer = Transfer.to(space, resolve_target(space, "small"))
    handset_s = estimate_flops("small") / 1e9
    handset_nano = estimate_flops("nano", img_size=64) / 1e9
    assert transfer.budget.gflops == pytest.approx(space.budget.gflops * handset_s / handset_nano)
    assert "scaled" in transfer.budget_from
    assert transfer.handset().ramp == RampSchedule.handset(SMALL)  # the paper's ramp
    assert transfer.handset().flops == estimate_flops("small")
    own = Target("small", SMALL, 224, Budget(gflops=5.0))
    assert Transfer.to(space, own).budget.gflops == 5.0


def test_every_mapped_ramp_stays_within_the_target_budget():
    space = load_space(DEMO)
    transfer = Transfer.to(space, Target("small", SMALL, 224, Budget(gflops=estimate_flops("small") / 1e9)))
    import random

    rng = random.Random(0)
    for _ in range(20):
        heads = [rng.randint(0, units) for units in NANO.block_units]
        mapped = transfer.map(RampSchedule.from_high_heads(NANO, heads), NANO)
        assert mapped.flops / 1e9 <= transfer.budget.gflops
        assert mapped.flops == estimate_flops("small", ramp=mapped.ramp)
        if "moved" in mapped.note:
            assert "nearest snap was over the target budget" in mapped.note


# -- targets --------------------------------------------------------------------------------------

def test_targets_resolve_from_names_files_and_the_space(tmp_path):
    space = load_space(DEMO)
    assert resolve_target(space) is None and resolve_target(space, "proxy") is None
    small = resolve_target(space, "small")
    assert (small.arch, small.img_size, small.label) == (SMALL, 224, "small-224")
    assert resolve_target(space, "base", 384).label == "base-384"
    file = tmp_path / "wide.yaml"
    file.write_text(yaml.safe_dump({"depths": [2, 2, 6, 2], "embed_dims": [64, 128, 256, 320], "img_size": 96,
                                    "budget": {"gflops": 0.5}}))
    wide = resolve_target(space, str(file))
    assert (wide.name, wide.img_size, wide.budget.gflops) == ("wide", 96, 0.5)
    assert retrain_dir(tmp_path, wide) == tmp_path / "retrain-wide-96"
    assert retrain_dir(tmp_path, None) == tmp_path / "retrain"
    data = yaml.safe_load(DEMO.read_text()) | {"target": {"variant": "large", "img_size": 384}}
    assert parse_space(data).target.label == "large-384"


@pytest.mark.parametrize("given, img_size, message", [
    ("medium", None, "--target 'medium': expected one of"),
    (None, 96, "--img-size 96: give a --target"),
    ("small", 16, "--img-size 16: expected an integer >= 32"),
])
def test_bad_targets_are_named(given, img_size, message):
    with pytest.raises(TransferError, match=message):
        resolve_target(load_space(DEMO), given, img_size)


@pytest.mark.parametrize("target, message", [
    ({"img_size": 224}, "target: give a variant"),
    ({"variant": "small", "depth": 3}, r"target: unknown keys \['depth'\]"),
    ({"depths": [1, 1, 1], "embed_dims": [32, 64, 96, 128]}, "target: depths must be 4 positive integers"),
    ({"variant": "small", "budget": {"gflops": -1}}, "target.budget.gflops: expected a positive number"),
    ({"variant": "small", "name": "a/b"}, "target.name: expected letters"),
])
def test_bad_target_sections_are_named(target, message):
    data = yaml.safe_load(DEMO.read_text()) | {"target": target}
    with pytest.raises(SpaceError, match=message):
        parse_space(data, "space.yaml")


# -- the workflow, end to end --------------------------------------------------------------------

NANO_SPACE = {
    "name": "nano-to-small",
    "architecture": {"variant": "nano"},
    "img_size": 32,
    "ramp": {"parameterization": "per_stage"},
    "budget": {"gflops": 0.0235},  # the nano hand-set ramp is 0.02311 GFLOPs at 32 px
    "target": {"variant": "small", "img_size": 32},
    "proxy": {"epochs": 1, "data": "synthetic-freq", "recipe": "proxy",
              "overrides": {"batch_size": 32, "workers": 0, "synthetic_low_classes": 2, "synthetic_high_classes": 2,
                            "synthetic_train_per_class": 24, "synthetic_val_per_class": 8}},
    "search": {"trials": 4, "sampler": "random", "pruner": "none", "seed": 0},
    "retrain": {"top": 2, "rescore_seeds": 0, "seeds": 1, "recipe": "proxy", "epochs": 1},
}


@pytest.fixture(scope="module")
def transferred_run(tmp_path_factory) -> Path:
    """One `run` of a nano search whose space targets iFormer-S (at 32 px, to stay cheap on CPU)."""
    folder = tmp_path_factory.mktemp("transfer")
    space = folder / "nano_to_small.yaml"
    space.write_text(yaml.safe_dump(NANO_SPACE, sort_keys=False))
    out = folder / "run"
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", str(space), "--out", str(out), "--quiet"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out / 'report-small-32' / 'report.html'}" in result.stdout
    assert "on iFormer-small at 32 px" in result.stdout
    return out


def test_search_on_nano_retrains_on_small_against_its_own_handset_ramp(transferred_run):
    plan = json.loads((transferred_run / "retrain-small-32" / "plan.json").read_text())
    assert not (transferred_run / "retrain").exists()  # the proxy architecture was not retrained
    assert plan["target"]["architecture"]["variant"] == "small" and plan["target"]["img_size"] == 32
    contenders = {c["name"]: c for c in plan["contenders"]}
    assert Architecture.from_dict(contenders["handset"]["spec"]["architecture"]) == SMALL
    assert contenders["handset"]["spec"]["ramp"] == list(RampSchedule.handset(SMALL).ratios)
    assert contenders["handset"]["proxy_ramp"] == list(RampSchedule.handset(NANO).ratios)
    budget = plan["target"]["budget"]["gflops"]
    for name, c in contenders.items():
        ramp = RampSchedule(tuple(c["spec"]["ramp"]))
        assert c["flops"] == estimate_flops("small", ramp=ramp, img_size=32)
        if name != "handset":
            assert c["flops"] / 1e9 <= budget
            searched = RampSchedule(tuple(c["proxy_ramp"]))
            nearest = transfer_ramp(searched, NANO, SMALL)
            assert ramp == nearest or "moved" in c["transfer"]
    results = pd.read_csv(transferred_run / "retrain-small-32" / "results.csv")
    assert set(results["name"]) == set(contenders) and (results["seed"] == 0).all()


def test_the_report_shows_both_ramps_and_transfer_fidelity(transferred_run):
    report = transferred_run / "report-small-32"
    md = (report / "report.md").read_text()
    assert "## Transfer" in md and "## Transfer fidelity" in md and "## Proxy fidelity" not in md
    assert "retrained on iFormer-small at 32 px, against that architecture's own hand-set ramp" in md
    table = pd.read_csv(report / "transfer.csv")
    assert list(table.columns) == ["schedule", "searched C_h/C", "searched GFLOPs", "target C_h/C", "target GFLOPs",
                                   "target params (M)", "note"]
    assert table["schedule"].iloc[0] == "handset" and len(table) >= 2
    assert (report / "transfer.png").stat().st_size > 0
    assert "transfer fidelity" in md


def test_report_and_retrain_name_the_same_target(transferred_run, tmp_path):
    """Without --target a report reads the space's target; --target proxy asks for a retraining that is not there."""
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "report", str(transferred_run), "--target",
                             "proxy", "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "has no retraining results" in result.stderr and "rampsearch retrain" in result.stderr
    assert "--target proxy" in result.stderr and not (tmp_path / "r").exists()


def test_a_target_budget_below_every_ramp_is_refused_when_the_space_is_read():
    data = yaml.safe_load(DEMO.read_text()) | {"target": {"variant": "small", "budget": {"gflops": 4.0}}}
    with pytest.raises(SpaceError, match=r"target.budget.gflops: 4.0 excludes every ramp of the target: its "
                                         r"cheapest is 4.518 GFLOPs at 224 px"):
        parse_space(data, "space.yaml")


# -- export: a retrained schedule as a timm folder -------------------------------------------------

def test_export_loads_back_through_timm_local_dir_with_the_same_logits(transferred_run, tmp_path):
    import timm
    import torch

    import rampsearch  # noqa: F401 - registers the entrypoints timm's local-dir loader calls
    from rampsearch.checkpoint import load_weights
    from rampsearch.model_spec import ModelSpec, build_model

    out = tmp_path / "best-small"
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "export", str(transferred_run), "--out", str(out),
                             "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(result.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    plan = json.loads((transferred_run / "retrain-small-32" / "plan.json").read_text())
    best = next(c for c in plan["contenders"] if c["name"] == "best")
    assert config["model_args"]["ramp"] == pytest.approx(best["spec"]["ramp"]) == written["ramp"]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["interpolation"] == "bilinear"  # the proxy recipe's evaluation transform

    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    original = build_model(ModelSpec.from_dict(best["spec"]), config["num_classes"]).eval()
    load_weights(transferred_run / "retrain-small-32" / "best" / "seed0" / "model.safetensors", original)
    assert loaded.ramp == original.ramp and loaded.architecture == original.architecture
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))


@pytest.mark.parametrize("args, message", [
    (["--schedule", "top9"], r"--schedule 'top9': .* retrained \['best', 'handset'.*\]; choose one"),
    (["--seed", "3"], r"--seed 3: best has no finished retraining with that seed .*finished: seed0\); "
                      r"rerun `rampsearch retrain \S+` to finish it"),
    (["--target", "base"], r"has no retraining in retrain-base-224/; run `rampsearch retrain \S+ --target base` "
                           r"first"),
])
def test_export_errors_name_what_to_choose(transferred_run, tmp_path, args, message):
    out = tmp_path / "x"
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "export", str(transferred_run), "--out", str(out),
                             *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1
    import re

    assert re.search(message, result.stderr), result.stderr


def test_export_never_overwrites(transferred_run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "export", str(transferred_run), "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "already exists and is not empty" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_ramp_file_of_another_architecture_transfers_through_the_same_function(tmp_path):
    from rampsearch.ramp import load_ramp

    ramp = RampSchedule.from_high_heads(NANO, [2, 1, 3, 2, 4, 1, 1, 5, 0, 8])
    file = tmp_path / "best.yaml"
    ramp.save(file, NANO)
    assert load_ramp(str(file), NANO) == ramp  # its own architecture: as written
    assert load_ramp(str(file), SMALL) == transfer_ramp(ramp, NANO, SMALL)
