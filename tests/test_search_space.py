"""Search spaces: schema validation messages, parameterizations, budget checks before training."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from rampsearch import Architecture, RampSchedule
from rampsearch.parameterizations import PARAMETERIZATIONS, Knots
from rampsearch.search.load import load_space, parse_space
from rampsearch.search.score import LOSS, TOP1
from rampsearch.search.space import SpaceError, check_budget, parse_space_data

ROOT = Path(__file__).resolve().parents[1]
NANO = {"architecture": {"variant": "nano"}, "img_size": 64}


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_spaces_validate(path):
    space = load_space(path)
    low, high, _ = check_budget(space)
    assert low <= space.handset().flops <= high


@pytest.mark.parametrize("data,message", [
    ({**NANO, "budgett": {}}, r"\(top level\): unknown keys \['budgett'\]"),
    ({"img_size": 64}, "architecture: missing"),
    ({**NANO, "architecture": {"variant": "tiny"}}, "architecture: unknown variant 'tiny'"),
    ({**NANO, "img_size": 16}, "img_size: expected an integer >= 32"),
    ({**NANO, "ramp": {"parameterization": "spline"}}, r"ramp.parameterization: 'spline' is not one of"),
    ({**NANO, "ramp": {"range": [0.8, 0.2]}}, r"ramp.range: expected \[low, high\]"),
    ({**NANO, "ramp": {"knots": 3}}, "ramp.knots: only used with parameterization: knots"),
    ({**NANO, "budget": {"gflops": "a lot"}}, "budget.gflops: expected a positive number, got 'a lot'"),
    ({**NANO, "objectives": ["flops"]}, "objectives: expected a list containing 'accuracy'"),
    ({**NANO, "search": {"sampler": "bayes"}}, r"search.sampler: 'bayes' is not one of"),
    ({**NANO, "search": {"trials": 0}}, "search.trials: expected an integer >= 1, got 0"),
    ({**NANO, "search": {"trials": True}}, "search.trials: expected an integer >= 1, got True"),
    ({**NANO, "search": {"seed": -1}}, "search.seed: expected an integer >= 0, got -1"),
    ({**NANO, "img_size": True}, "img_size: expected an integer >= 32, got True"),
    ({**NANO, "proxy": {"epochs": 0}}, "proxy.epochs: expected an integer >= 1, got 0"),
    ({**NANO, "proxy": {"overrides": {"lr_typo": 1}}}, "proxy: .*unknown recipe key 'lr_typo'"),
    ({**NANO, "proxy": {"overrides": {"batch_size": "big"}}}, "proxy: batch_size: expected int"),
    ({**NANO, "proxy": {"recipe": "fast"}}, "proxy: recipe 'fast' is neither a shipped recipe"),
    ({**NANO, "retrain": {"seeds": 0}}, "retrain.seeds: expected an integer >= 1, got 0"),
    ({**NANO, "retrain": {"top": False}}, "retrain.top: expected an integer >= 1, got False"),
    ({**NANO, "budget": {"num_classes": 1}}, "budget.num_classes: expected an integer >= 2, got 1"),
    ({**NANO, "objectives": ["accuracy", "flops"], "search": {"sampler": "cmaes"}}, "cmaes is single-objective"),
    ({**NANO, "search_architecture": {"depths": [[1, 2]]}}, "search_architecture.depths: expected 4 lists"),
    ({**NANO, "search_architecture": {"embed_dims": [[64], [128], [200], [256]]}},
     r"search_architecture.embed_dims\[2\]: widths must be positive multiples of head_dim=32, got \[200\]"),
    ({**NANO, "search_architecture": {"depths": [[1, 1], [1, 2], [1, 3], [1, 2]]}},
     "the base architecture's depth_1=2 is outside the searched values"),
    ({**NANO, "method": "zero-cost"}, r"method: 'zero-cost' is not one of \['train', 'one-shot'\]"),
    ({**NANO, "method": 3}, "method: expected the name of a search method, got 3"),
])
def test_bad_spaces_name_the_key(data, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(data, source="bad.yaml")


def test_a_space_is_ranked_by_its_method_only_once_loaded_through_the_registry():
    # space.py parses without knowing the methods (each method module reads spaces); search.load.parse_space checks
    # the method and fills in its default score, which `score` refuses to guess before that
    written = parse_space_data({**NANO, "method": "one-shot"}, source="one.yaml")
    assert written.search.score is None
    with pytest.raises(ValueError, match="one.yaml: the space was not checked by its method"):
        written.score
    assert parse_space({**NANO, "method": "one-shot"}).search.score == LOSS
    assert parse_space({**NANO, "method": "one-shot", "search": {"score": "top1"}}).search.score == TOP1


def test_load_space_file_errors(tmp_path):
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("architecture: [unclosed\n")
    with pytest.raises(SpaceError, match="bad.yaml is not valid YAML"):
        load_space(bad)


def test_proxy_epochs_resolved_once_from_the_recipe():
    assert parse_space(NANO).proxy.epochs == 3  # the proxy recipe's epochs, not a backend's default
    assert parse_space({**NANO, "proxy": {"epochs": 5}}).proxy.epochs == 5
    assert parse_space(NANO, overrides={"epochs": 4}).proxy.epochs == 4
    with pytest.raises(SpaceError, match=r"--set: .*unknown recipe key 'nope'"):
        parse_space(NANO, source="s.yaml", overrides={"nope": 1})


def test_budget_that_excludes_everything_stops_with_the_range():
    space = parse_space({**NANO, "budget": {"gflops": 0.05}}, source="tight.yaml")
    with pytest.raises(SpaceError,
                       match=r"budget.gflops=0.05 excludes every candidate: this space spans 0.08977-0.09926"):
        check_budget(space)
    _, _, warning = check_budget(parse_space({**NANO, "budget": {"gflops": 1.0}}))
    assert "excludes nothing" in warning


def _sample(space, seed=0, n=30):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("kind", sorted(PARAMETERIZATIONS))
def test_parameterizations_give_valid_ramps_and_reproduce_the_handset_ramp(kind):
    space = parse_space({"architecture": {"variant": "small"}, "ramp": {"parameterization": kind}})
    for candidate in _sample(space):
        candidate.ramp.channels(candidate.arch)  # valid for every block
        if kind == "monotone":
            assert list(candidate.ramp.ratios) == sorted(candidate.ramp.ratios, reverse=True)
    # The enqueued first trial maps to the exact hand-set ramp whatever the parameterization.
    study = optuna.create_study()
    study.enqueue_trial(space.handset_params())
    baseline = space.suggest(study.ask())
    assert baseline.handset and baseline.ramp == RampSchedule.handset(space.base)
    if kind in ("free", "monotone"):  # these express it exactly
        assert space.parameterization.suggest(
            optuna.trial.FixedTrial(space.handset_params()), space.base, 0.0, 1.0) == baseline.ramp


def test_budget_constraints_recorded_before_training():
    space = parse_space({**NANO, "budget": {"gflops": 0.0925, "mparams": 4.7}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        candidate = space.suggest(trial)
        study.tell(trial, 0.0)
        frozen = study.trials[-1]
        assert frozen.constraints["gflops"] == pytest.approx(candidate.flops / 1e9 - 0.0925)
        assert candidate.feasible == (candidate.flops <= 0.0925e9 and candidate.params <= 4.7e6)


def test_architecture_search_space():
    space = load_space(ROOT / "search_spaces" / "iformer_tiny_2g.yaml")
    depths = set()
    for candidate in _sample(space, n=25):
        assert candidate.arch.pool_sizes[0] in (2, 4) and candidate.arch.embed_dims[2] in (192, 224, 256)
        depths.add(candidate.arch.depths)
        assert len(candidate.ramp) == candidate.arch.num_blocks
    assert len(depths) > 1


def test_knots_positions():
    assert Knots(3).positions() == [0.0, 0.5, 1.0]
    arch = Architecture.resolve("nano")
    ramp = Knots(2).suggest(optuna.trial.FixedTrial({"knot_0": 1.0, "knot_1": 0.0}), arch, 0.0, 1.0)
    assert ramp.ratios[0] > ramp.ratios[-1]


def test_spaces_yaml_are_documented():
    readme = (ROOT / "search_spaces" / "README.md").read_text()
    for path in (ROOT / "search_spaces").glob("*.yaml"):
        assert path.name in readme
        assert yaml.safe_load(path.read_text())["name"] == path.stem
