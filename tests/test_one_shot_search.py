"""One-shot searches end to end on a tiny space: the supernet is trained once, candidates are scored on it
(both backends), the finalists, `retrain --init supernet`, the report, and a --supernet for another space."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rampsearch.errors import UserError
from rampsearch.report import build_report
from rampsearch.retrain import run_retrain
from rampsearch.search import SearchOptions, run_search
from rampsearch.search.methods.one_shot import SUPERNET_DIR
from rampsearch.supernet import SupernetError
from test_search_e2e import CLI, RAY_ENV, TINY, ray_cluster  # noqa: F401 - the fixture

ONE_SHOT = {"method": "one-shot", "supernet": {"epochs": 2, "random_ramps": 1, "score_images": 32, "bn_images": 32}}


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    """The tiny space with method one-shot."""
    data = {**yaml.safe_load(TINY.read_text()), **ONE_SHOT}
    path = tmp_path_factory.mktemp("space") / "tiny_one_shot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def searched(space_file, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("one_shot") / "run"
    run_search(space_file, run_dir, SearchOptions(trials=8, study="tiny"), "optuna", show_progress=False,
               log=SEARCH_LOG.append)
    return run_dir


SEARCH_LOG: list[str] = []  # what the fixture's search said, as a log file would have it


def test_supernet_training_says_each_epoch_in_the_search_log(searched):
    epochs = [line for line in SEARCH_LOG if line.startswith("supernet: epoch ")]
    assert [line.split()[2] for line in epochs] == ["1/2:", "2/2:"]
    assert all("hand-set sub-network loss" in line for line in epochs)


def test_one_shot_search_trains_one_supernet_and_scores_every_candidate_on_it(searched):
    frame = pd.read_csv(searched / "trials.csv")
    complete = frame[frame["state"] == "COMPLETE"]
    assert len(complete) == 8 and complete.iloc[0]["handset"]
    assert (complete["method"] == "one-shot").all()
    assert not (searched / "trials").exists()  # no candidate trained
    assert (searched / SUPERNET_DIR / "model.safetensors").is_file()
    meta = json.loads((searched / "search.json").read_text())
    assert meta["method"] == "one-shot" and meta["search_split"] == {"share": 0.2, "seed": 0}
    assert (searched / "best.yaml").is_file()


def test_rerun_with_more_candidates_reuses_the_supernet(space_file, searched):
    weights = searched / SUPERNET_DIR / "model.safetensors"
    before = weights.stat().st_mtime_ns
    run_search(space_file, searched, SearchOptions(trials=10, study="tiny"), "optuna", show_progress=False,
               log=lambda m: None)
    assert weights.stat().st_mtime_ns == before
    assert (pd.read_csv(searched / "trials.csv")["state"] == "COMPLETE").sum() == 10


def test_retrain_rescores_finalists_inherits_supernet_weights_and_the_report_says_so(searched):
    frame = run_retrain(searched, top=1, seeds=1, epochs=2, init="supernet", log=lambda m: None)
    assert set(frame["name"]) == {"handset", "best"}
    plan = json.loads((searched / "retrain" / "plan.json").read_text())
    best = next(c for c in plan["contenders"] if c["name"] == "best")
    assert "supernet search loss on all" in best["chosen_by"] and best["init"] == "supernet"
    assert "minus runner-up" in best["chosen_by"] and "paired images" in best["chosen_by"]
    assert (searched / "retrain" / "best" / "init.safetensors").is_file()
    config = json.loads((searched / "retrain" / "best" / "seed0" / "config.json").read_text())
    assert config["init"].endswith("init.safetensors") and config["data_split"] == "final"
    report = build_report(searched, None, log=lambda m: None)
    text = Path(report["markdown"]).read_text()
    assert "supernet" in text and "How each schedule was chosen" in text


def test_supernet_of_another_space_is_refused_naming_what_differs(space_file, searched, tmp_path):
    other = yaml.safe_load(space_file.read_text())
    other["ramp"] = {"parameterization": "free", "range": [0.0, 0.5]}
    other_file = tmp_path / "other.yaml"
    other_file.write_text(yaml.safe_dump(other))
    options = SearchOptions(trials=2, study="other", supernet=str(searched / SUPERNET_DIR))
    with pytest.raises(SupernetError, match=r"another space.*supernet\.ratio_range"):
        run_search(other_file, tmp_path / "run", options, "optuna", show_progress=False, log=lambda m: None)
    with pytest.raises(UserError, match="--supernet is for the one-shot method"):
        run_search(TINY, tmp_path / "run2", SearchOptions(trials=2, study="t", supernet=str(searched / SUPERNET_DIR)),
                   "optuna", show_progress=False, log=lambda m: None)


def test_init_supernet_needs_a_one_shot_search(tmp_path):
    run_dir = tmp_path / "run"
    run_search(TINY, run_dir, SearchOptions(trials=1, study="tiny"), "optuna", show_progress=False, log=lambda m: None)
    with pytest.raises(UserError, match="--init supernet.*has no supernet"):
        run_retrain(run_dir, top=1, seeds=1, epochs=2, init="supernet", log=lambda m: None)


def test_ray_one_shot_search_shares_the_supernet(space_file, searched, tmp_path, ray_cluster):  # noqa: F811
    run_dir = tmp_path / "run"
    result = subprocess.run([*CLI, "search", str(space_file), "--backend", "ray", "--address", ray_cluster,
                             "--trials", "4", "--supernet", str(searched / SUPERNET_DIR), "--out", str(run_dir),
                             "--json"], capture_output=True, text=True, timeout=600, env={**os.environ, **RAY_ENV})
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(run_dir / "trials.csv")
    complete = frame[frame["state"] == "COMPLETE"]
    assert len(complete) == 4 and (complete["method"] == "one-shot").all()
    assert not (run_dir / SUPERNET_DIR).exists()  # the given supernet was used, none trained
    # the same candidate scores the same on the same supernet, whichever backend scored it
    embedded = pd.read_csv(searched / "trials.csv")
    handset = lambda f: f[f["handset"] & (f["state"] == "COMPLETE")].iloc[0]["value"]  # noqa: E731
    assert handset(complete) == handset(embedded)


def test_cli_one_shot_flags_are_checked(space_file, tmp_path):
    result = subprocess.run([*CLI, "search", str(space_file), "--supernet", str(tmp_path / "missing"),
                             "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2 and "no finished supernet there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_method_train_finalists_get_extra_proxy_seeds_and_are_ranked_by_their_mean(tmp_path):
    run_dir = tmp_path / "run"
    run_search(TINY, run_dir, SearchOptions(trials=3, study="tiny"), "optuna", show_progress=False,
               log=lambda m: None)
    run_retrain(run_dir, top=1, seeds=1, epochs=2, overrides=None, log=lambda m: None)
    plan = json.loads((run_dir / "retrain" / "plan.json").read_text())
    best = next(c for c in plan["contenders"] if c["name"] == "best")
    searched = (pd.read_csv(run_dir / "trials.csv").query("state == 'COMPLETE' and not handset"))
    assert len(searched) == 2  # the tiny space's seed gives two searched schedules to choose between
    assert "mean search top-1 over 3 seeds" in best["chosen_by"]  # the search's seed and rescore_seeds: 2 more
    assert "over 3 paired seeds" in best["chosen_by"]  # the best against the runner-up, seed by seed
    rescored = sorted(p.parent.name for p in (run_dir / "rescore").glob("trial-*/seed*/result.json"))
    assert len(rescored) == 2 * min(len(searched), 3 * 1)  # the best 3 K distinct, 2 more seeds each
