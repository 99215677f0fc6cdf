"""Scores that rank and searches that do not repeat themselves (issue 20): the searched score and its
direction, standard errors over images, paired comparisons, duplicates answered from the earlier trial
and never trained, redrawn proposals, complete searches, and runs made before `search.score`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from rampsearch.errors import UserError
from rampsearch.search import SearchOptions, run_search
from rampsearch.search import optuna_backend
from rampsearch.search.distinct import DistinctSampler, covers, scored_candidates
from rampsearch.search.record import DUPLICATE, TrialRecord
from rampsearch.search.score import LOSS, TOP1, Score, paired_difference
from rampsearch.search.load import load_run, load_space, parse_space
from rampsearch.search.study import counted_trials, make_sampler, open_study, stalled_proposals
from rampsearch.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"


def _tiny(**search) -> dict:
    import yaml

    data = yaml.safe_load(TINY.read_text())
    data["search"].update(search)
    return data


# -- the score ---------------------------------------------------------------------------------------

def test_score_directions_and_order():
    loss, top1 = Score(LOSS), Score(TOP1)
    assert (loss.direction, loss.mode, top1.direction, top1.mode) == ("minimize", "min", "maximize", "max")
    assert loss.better(0.9, 1.0) and not loss.better(1.0, 0.9) and top1.better(50.0, 40.0)
    assert sorted([1.2, 0.8, 1.0], key=loss.sort_key) == [0.8, 1.0, 1.2]
    assert sorted([40.0, 60.0, 50.0], key=top1.sort_key) == [60.0, 50.0, 40.0]
    with pytest.raises(ValueError, match="not one of"):
        Score("accuracy")


def test_space_score_defaults_by_method_and_is_validated():
    data = _tiny()
    assert parse_space(data).search.score == TOP1 and parse_space(data).directions == ["maximize"]
    one_shot = {**data, "method": "one-shot", "ramp": {"parameterization": "per_stage"}}
    assert parse_space(one_shot).search.score == LOSS and parse_space(one_shot).directions == ["minimize"]
    assert parse_space(_tiny(score="loss")).directions == ["minimize"]
    with pytest.raises(UserError, match="search.score: 'top5' is not one of"):
        parse_space(_tiny(score="top5"))
    with pytest.raises(UserError, match="'accuracy' .* must come first"):
        parse_space({**data, "objectives": ["flops", "accuracy"]})


def test_paired_difference_against_a_hand_computed_case():
    # differences 1, 2, 3, 4: mean 2.5, sample sd sqrt(5/3), se sqrt(5/3)/2 = 0.6455; t(3, 0.975) = 3.1824
    d = paired_difference([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0])
    assert d.difference == pytest.approx(2.5) and d.se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert d.ci_low == pytest.approx(2.5 - 3.182446 * 0.645497, abs=1e-5) and d.distinguishable
    assert d.p_value == pytest.approx(0.0305, abs=1e-4) and d.images == 4  # t = 2.5 / 0.6455 = 3.873 on 3 df
    tie = paired_difference([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0])  # opposite images: mean 0
    assert tie.difference == 0 and not tie.distinguishable
    same = paired_difference([1.0, 2.0], [0.5, 1.5])  # every image differs by the same amount
    assert same.se == 0 and math.isnan(same.p_value) and same.distinguishable
    with pytest.raises(ValueError, match="same images"):
        paired_difference([1.0, 2.0], [1.0])


def test_evaluate_gives_standard_errors_that_match_its_per_image_values():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    batches = [(torch.randn(5, 3, 2, 2), torch.randint(0, 3, (5,))) for _ in range(3)]
    per_image: list = []
    metrics = evaluate(model, batches, per_image=per_image)
    losses, hits = (torch.cat(v).numpy() for v in zip(*per_image))
    assert len(losses) == 15 and metrics["loss"] == pytest.approx(losses.mean())
    assert metrics["loss_se"] == pytest.approx(losses.std(ddof=1) / math.sqrt(15))
    assert metrics["top1"] == pytest.approx(100 * hits.mean())
    assert metrics["top1_se"] == pytest.approx(100 * hits.std(ddof=1) / math.sqrt(15))


# -- repeats -----------------------------------------------------------------------------------------

def _fake_scores(monkeypatch) -> list:
    """Replace training with a score that is a function of the ramp; returns the list of candidates scored."""
    calls: list = []

    def fake(space, candidate, run_dir, folder, options, report):
        calls.append(candidate.key)
        loss = 1.0 + sum((r - 0.4) ** 2 for r in candidate.ramp.ratios)
        row = {"epoch": 1, "loss": loss, "top1": 100 / (1 + loss), "top5": 100.0, "loss_se": 0.01, "top1_se": 1.0}
        return {**row, "history": [row], "seconds": 0.0}

    monkeypatch.setattr(optuna_backend, "evaluate_candidate", fake)
    return calls


def test_a_duplicate_is_answered_with_the_earlier_score_and_never_trained(tmp_path, monkeypatch):
    calls = _fake_scores(monkeypatch)
    space = parse_space(_tiny(score="loss"), str(TINY))
    study, seed = open_study(space, tmp_path, "tiny", None)
    params = {"ratio_0": 0.0, "ratio_1": 0.5, "ratio_2": 0.5, "ratio_3": 0.5, "ratio_4": 0.9}
    study.enqueue_trial(params)
    study.enqueue_trial({**params, "ratio_0": 0.1})  # snaps to the same ramp (a 1-head block: 0 heads)
    objective = optuna_backend.make_objective(space, tmp_path, SearchOptions(trials=3, study="tiny"), seed)
    study.optimize(objective, n_trials=3)
    first, repeat = study.trials[1], study.trials[2]
    record = TrialRecord.of(repeat)
    assert len(calls) == 2  # the hand-set ramp and the first of the two: the repeat never trained
    assert repeat.state == optuna.trial.TrialState.COMPLETE and repeat.values == first.values
    assert record.status == DUPLICATE and record.repeat_of == first.number and record.score_se == 0.01
    assert "answered with its score" in record.reason
    assert counted_trials(study.trials) == (2, 1)  # trained trials count; the repeat does not
    assert scored_candidates(study.trials) == {TrialRecord.of(t).candidate for t in study.trials[:2]}


def test_a_duplicate_of_a_pruned_trial_is_rejected(tmp_path, monkeypatch):
    _fake_scores(monkeypatch)
    space = parse_space(_tiny(), str(TINY))
    study, seed = open_study(space, tmp_path, "tiny", None)
    objective = optuna_backend.make_objective(space, tmp_path, SearchOptions(trials=2, study="tiny"), seed)
    study.optimize(objective, n_trials=1)  # the hand-set ramp
    pruned = study.ask(fixed_distributions={})
    TrialRecord(architecture=space.base.to_dict(), ramp=(0.0, 0.5, 0.5, 0.5, 1 / 3)).write(pruned)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    study.enqueue_trial({"ratio_0": 0.0, "ratio_1": 0.5, "ratio_2": 0.5, "ratio_3": 0.5, "ratio_4": 0.34})
    study.optimize(objective, n_trials=1)
    repeat = TrialRecord.of(study.trials[-1])
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED and repeat.status == DUPLICATE
    assert "rejected" in repeat.reason and stalled_proposals(study.trials) == 1


def test_the_distinct_sampler_redraws_a_proposal_that_repeats(tmp_path):
    space = parse_space(_tiny(), str(TINY))
    study = optuna.create_study(sampler=make_sampler(space, 0), direction="maximize")
    assert isinstance(study.sampler, DistinctSampler)
    seen = set()
    for i in range(40):  # TPE after its random start-up: every proposal a new candidate while new ones remain
        trial = study.ask()
        candidate = space.suggest(trial)
        seen.add(candidate.key)
        study.tell(trial, -sum((r - 0.5) ** 2 for r in candidate.ramp.ratios))
    repeats = 40 - len(seen)
    assert repeats <= 2, f"{repeats} of 40 proposals repeated a candidate"  # 11 before proposals were moved


def test_a_search_of_a_listable_space_stops_complete(tmp_path, monkeypatch):
    calls = _fake_scores(monkeypatch)
    data = _tiny(trials=500, score="loss", sampler="random")
    data["ramp"] = {"parameterization": "per_stage", "range": [0.3, 0.7]}
    data.pop("budget")
    space_file = tmp_path / "small.yaml"
    import yaml

    space_file.write_text(yaml.safe_dump(data))
    grid = load_space(space_file).grid()
    assert grid is not None and 1 < len(grid) < 20
    logged: list[str] = []
    outcome = run_search(space_file, tmp_path / "run", SearchOptions(trials=500, study="small"),
                         show_progress=False, log=logged.append)
    assert outcome.complete and f"every one of the {len(grid)} distinct candidates" in outcome.complete
    assert any(f"the budget admits {len(grid)} distinct candidates" in line for line in logged)
    trials = outcome.study.get_trials(deepcopy=False)
    assert covers(trials, grid) and len(set(calls)) == len(calls)  # each candidate trained once
    assert outcome.summary()["complete"] == outcome.complete


# -- runs made before search.score -------------------------------------------------------------------

def test_a_run_searched_by_top1_before_score_existed_keeps_ranking_by_top1(tmp_path):
    data = {**_tiny(), "method": "one-shot", "ramp": {"parameterization": "per_stage"}}
    import yaml

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "space.yaml").write_text(yaml.safe_dump(data))
    (run_dir / "search.json").write_text(json.dumps({"study": "old", "storage_kind": "journal"}))  # no "score"
    space = load_space(run_dir / "space.yaml")
    assert space.search.score == LOSS  # today's default for one-shot
    old = space.with_score(TOP1)
    open_study(old, run_dir, "old", None)  # created maximizing top-1, as rampsearch 0.1 did
    loaded, study = load_run(run_dir)
    assert loaded.search.score == TOP1 and loaded.directions == ["maximize"]
    with pytest.raises(UserError, match="set search.score to the study's"):
        open_study(space, run_dir, "old", None)
