"""The Ray backend: its hold on Ray's OptunaSearch internals, the searcher's records, checkpoint
alignment, an unreachable --address, and a trial retried mid-training on a "new node"."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from rampsearch.checkpoint import POINTER, save_checkpoint
from rampsearch.errors import UserError
from rampsearch.search import SearchOptions, ray_backend, run_search
from rampsearch.search.ray_backend import searcher as ray_searcher, worker as ray_worker
from rampsearch.search.progress import Progress
from rampsearch.search.record import DUPLICATE, FAILED, OVER_BUDGET, PRUNED, TrialRecord
from rampsearch.search.load import load_space
from rampsearch.search.study import open_storage, trial_by_number

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
# Ray reads these when imported: no usage stats, and a one-machine cluster whose every connection
# stays on loopback (on Linux, Ray otherwise swaps 127.0.0.1 for the machine's interface address).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
RAY_VERSION = "2.60.0"  # the Ray whose OptunaSearch internals ray_backend's private section is written for


def _searcher(max_epochs: int = 2, seed: int = 0) -> ray_backend.RampOptunaSearch:
    space = load_space(TINY)
    return ray_backend.RampOptunaSearch(space=ray_backend.DefineByRun(space), metric="top1", mode="max",
                                        sampler=optuna.samplers.RandomSampler(seed=seed), max_epochs=max_epochs,
                                        sampler_seed=seed, score_se_key=space.score.se_key)


def _state(searcher, number: int) -> TrialState:
    return trial_by_number(ray_searcher._optuna_study(searcher), number).state


def test_optuna_search_internals_match_the_installed_ray():
    """ray_backend reaches into OptunaSearch's `_ot_study`, `_ot_trials` and `_completed_trials`:
    a Ray upgrade must fail here, not in a search. (Its use of Ray's authentication internals is
    run against real clusters in tests/test_faults_ray.py.)"""
    assert ray.__version__ == RAY_VERSION, "check ray_backend's OptunaSearch section against the new Ray, then update"
    searcher = _searcher()
    assert isinstance(ray_searcher._optuna_study(searcher), optuna.Study)
    assert ray_searcher._optuna_trial(searcher, "never") is None

    OptunaSearch.suggest(searcher, "a")
    trial = ray_searcher._optuna_trial(searcher, "a")
    assert isinstance(trial, optuna.Trial)
    ray_searcher._reject(searcher, "a")  # the Tune trial id is free for a new candidate
    assert ray_searcher._optuna_trial(searcher, "a") is None and not ray_searcher._is_done(searcher, "a")
    assert _state(searcher, trial.number) == TrialState.PRUNED

    OptunaSearch.suggest(searcher, "b")
    number = ray_searcher._optuna_trial(searcher, "b").number
    ray_searcher._finish(searcher, "b", TrialState.PRUNED)
    assert ray_searcher._is_done(searcher, "b")
    # OptunaSearch itself now ignores the trial: no second tell, no report on a finished trial
    OptunaSearch.on_trial_result(searcher, "b", {"top1": 1.0, "training_iteration": 1})
    OptunaSearch.on_trial_complete(searcher, "b", {"top1": 1.0})
    assert _state(searcher, number) == TrialState.PRUNED

    OptunaSearch.suggest(searcher, "c")
    ray_searcher._mark_done(searcher, "c")
    OptunaSearch.on_trial_complete(searcher, "c", {"top1": 1.0})
    assert _state(searcher, ray_searcher._optuna_trial(searcher, "c").number) == TrialState.RUNNING

    OptunaSearch.suggest(searcher, "d")
    assert ray_searcher._unfinished(searcher) == [ray_searcher._optuna_trial(searcher, "d")]  # not b, nor c


def test_suggest_rejects_over_budget_candidates_with_their_record():
    searcher = _searcher()
    configs = [searcher.suggest(f"t{i}") for i in range(8)]
    study = ray_searcher._optuna_study(searcher)
    rejected = [t for t in study.get_trials() if TrialRecord.of(t).over_budget]
    assert rejected, "the tiny space's budget should reject some random candidates"
    for trial in rejected:
        record = TrialRecord.of(trial)
        assert trial.state == TrialState.PRUNED and record.status == OVER_BUDGET and "over budget" in record.reason
    for tune_id, config in zip((f"t{i}" for i in range(8)), configs):
        trial = trial_by_number(study, config["number"])
        record = TrialRecord.of(trial)
        assert config["admitted"] and trial.state == TrialState.RUNNING
        assert record.folder == config["number"] and record.ray_trial_id == tune_id and record.status is None


def test_suggest_rejects_a_duplicate_of_a_candidate_still_training():
    searcher = _searcher()
    space, study = load_space(TINY), ray_searcher._optuna_study(searcher)
    for _ in range(2):
        study.enqueue_trial(space.handset_params())  # proposed twice
    first, second = searcher.suggest("first"), searcher.suggest("second")
    assert first["handset"] and not second["handset"]
    duplicates = {t.number: t for t in study.get_trials() if TrialRecord.of(t).status == DUPLICATE}
    assert all(t.state == TrialState.PRUNED for t in duplicates.values())
    again = duplicates[first["number"] + 1]  # the second proposal of the hand-set ramp
    assert TrialRecord.of(again).reason == (f"the same candidate as trial {first['number']}; rejected (it has no "
                                            "score to give), never trained")
    assert TrialRecord.of(again).repeat_of == first["number"]


def test_suggest_answers_a_duplicate_of_a_finished_trial_with_its_score():
    searcher = _searcher(max_epochs=1)
    space, study = load_space(TINY), ray_searcher._optuna_study(searcher)
    first = searcher.suggest("first")
    epoch = {"top1": 40.0, "top5": 90.0, "loss": 1.0, "train_loss": 1.2, "time_total_s": 3.0, "top1_se": 2.5}
    searcher.on_trial_complete("first", {**epoch, "epoch": 1, "training_iteration": 1})
    assert TrialRecord.of(trial_by_number(study, first["number"])).score_se == 2.5
    study.enqueue_trial(space.handset_params())  # the hand-set ramp proposed again, after it finished
    second = searcher.suggest("second")
    repeat = next(t for t in study.get_trials() if TrialRecord.of(t).status == DUPLICATE)
    record = TrialRecord.of(repeat)
    assert repeat.state == TrialState.COMPLETE and repeat.value == 40.0 and record.score_se == 2.5
    assert record.repeat_of == first["number"] and "answered with its score" in record.reason
    assert second["number"] > repeat.number and not second["handset"]  # the Tune trial got a new candidate


def test_searcher_records_asha_stops_completions_and_leaves_errors_to_the_callback():
    searcher = _searcher(max_epochs=2)
    stopped, complete, errored = (searcher.suggest(t) for t in ("stopped", "complete", "errored"))
    epoch = {"top1": 40.0, "top5": 90.0, "loss": 1.0, "train_loss": 1.2, "time_total_s": 3.0}
    searcher.on_trial_complete("stopped", {**epoch, "epoch": 1, "training_iteration": 1})
    for e in (1, 2):
        searcher.on_trial_result("complete", {**epoch, "top1": 40.0 + e, "epoch": e, "training_iteration": e})
    searcher.on_trial_complete("complete", {**epoch, "top1": 42.0, "epoch": 2, "training_iteration": 2})
    searcher.on_trial_result("errored", {**epoch, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_complete("errored", error=True)

    study = ray_searcher._optuna_study(searcher)
    trial = trial_by_number(study, stopped["number"])
    record = TrialRecord.of(trial)
    assert trial.state == TrialState.PRUNED and record.status == PRUNED
    assert record.reason == "stopped by ASHA after epoch 1/2" and [r["epoch"] for r in record.history] == [1]
    trial = trial_by_number(study, complete["number"])
    record = TrialRecord.of(trial)
    assert trial.state == TrialState.COMPLETE and trial.value == 42.0 and record.status is None
    assert [(r["epoch"], r["top1"]) for r in record.history] == [(1, 41.0), (2, 42.0)] and record.duration_s == 3.0
    trial = trial_by_number(study, errored["number"])
    assert trial.state == TrialState.RUNNING and ray_searcher._is_done(searcher, "errored")  # StudyCallback fails it
    assert [r["epoch"] for r in TrialRecord.of(trial).history] == [1]


def _checkpoint(folder: Path, epoch: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder, epoch, {"w": torch.full((2,), float(epoch))}, {"epoch_seen": epoch})


@pytest.mark.parametrize("local, tune_epoch", [(None, 2), (3, 2), (2, 2), (1, None)])
def test_training_folder_is_aligned_with_tunes_checkpoint(tmp_path, monkeypatch, local, tune_epoch):
    folder, stored = tmp_path / "trials" / "0007", tmp_path / "tune" / "checkpoint_000001"
    if local is not None:
        _checkpoint(folder, local)
    if tune_epoch is not None:
        _checkpoint(stored, tune_epoch)
    checkpoint = tune.Checkpoint.from_directory(str(stored)) if tune_epoch is not None else None
    monkeypatch.setattr(ray_worker.tune, "get_checkpoint", lambda: checkpoint)
    ray_worker._align_with_tune(folder)
    if tune_epoch is None:
        assert not (folder / POINTER).exists() and not list(folder.glob("ckpt-*"))
    else:
        assert json.loads((folder / POINTER).read_text())["epoch"] == tune_epoch
        assert sorted(p.name for p in folder.glob("ckpt-*")) == [f"ckpt-{tune_epoch}.model.safetensors",
                                                                   f"ckpt-{tune_epoch}.state.safetensors"]


@pytest.mark.parametrize("tune_epoch, kept", [(4, True), (3, False)])
def test_a_finished_training_is_kept_only_if_tune_has_its_last_epoch(tmp_path, monkeypatch, tune_epoch, kept):
    folder, stored = tmp_path / "trials" / "0000", tmp_path / "tune" / "checkpoint_000002"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"epochs": 4}))
    _checkpoint(stored, tune_epoch)
    monkeypatch.setattr(ray_worker.tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(stored)))
    ray_worker._align_with_tune(folder)
    assert (folder / "result.json").exists() == kept  # else training resumes from Tune's epoch 3
    assert (folder / POINTER).exists() != kept


def test_staged_checkpoint_holds_only_the_current_epoch(tmp_path):
    folder = tmp_path / "trials" / "0000"
    _checkpoint(folder, 1)
    _checkpoint(folder, 2)
    (folder / "metrics.csv").write_text("epoch\n1\n2\n")
    with ray_worker._staged_checkpoint(folder) as checkpoint:
        staged = Path(checkpoint.path)
        assert sorted(p.name for p in staged.iterdir()) == [POINTER, "ckpt-2.model.safetensors",
                                                             "ckpt-2.state.safetensors"]
    assert not staged.exists() and (folder / POINTER).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_fails_fast_with_a_clear_message(tmp_path):
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(UserError, match=rf"--address {address}: no Ray cluster answers there.*ray start --head"):
        run_search(TINY, tmp_path / "run", SearchOptions(trials=1, study="tiny", address=address), "ray",
                   show_progress=False, log=lambda m: None)
    assert time.monotonic() - started < 10
    assert not ray.is_initialized()


# -- a search with faults, on a local Ray ---------------------------------------------------------

EPOCHS, FAIL_AFTER_EPOCH = 4, 2


def _trainable_with_faults(config, **kwargs):
    """ray_backend's trainable with injected faults, by Optuna trial number.

    Trial 0 (the hand-set ramp) loses its node once, after reporting epoch FAIL_AFTER_EPOCH: its
    training folder is deleted and it raises, so its retry can resume only from Tune's checkpoint.
    Every other trial raises before training, every time. Shipped to Ray's workers by value (see
    _search_with_faults); the patch of tune.report lives and dies with the first attempt's process.
    """
    from ray import tune

    backend = importlib.import_module("rampsearch.search.ray_backend.worker")
    if config["number"] != 0:
        raise RuntimeError("injected fault: this trial always fails")
    if tune.get_checkpoint() is None:
        report = tune.report

        def report_then_fail(metrics, *, checkpoint=None):
            report(metrics, checkpoint=checkpoint)
            if metrics["epoch"] == FAIL_AFTER_EPOCH:
                shutil.rmtree(backend.trial_folder(Path(kwargs["run_dir"]), config["number"]))
                raise RuntimeError(f"injected fault after epoch {FAIL_AFTER_EPOCH}")

        tune.report = report_then_fail
    backend.trainable(config, **kwargs)


def _search_with_faults(space_file: str, run_dir: str) -> None:
    """The driver of `faulty_search`, run in its own process: a local Ray started by ray_backend.run."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray_worker.trainable = _trainable_with_faults
    ray_backend.run(load_space(space_file), Path(space_file), Path(run_dir),
                    SearchOptions(trials=2, study="tiny", cpus_per_trial=1), Progress(2, enabled=True))


@pytest.fixture(scope="module")
def faulty_search(tmp_path_factory) -> tuple[Path, str]:
    """(run directory, the driver's stderr) of a two-trial search of the tiny space at EPOCHS epochs.

    The driver runs in a subprocess whose environment keeps Ray on loopback (two 1-CPU trials) and whose
    HOME is a temporary folder (a local Ray 2.60 writes an auth token to ~/.ray), so it leaves
    nothing behind; run() shuts down exactly the Ray it started.
    """
    tmp = tmp_path_factory.mktemp("faulty")
    data = yaml.safe_load(TINY.read_text())
    data["proxy"]["epochs"], data["search"]["trials"] = EPOCHS, 2
    space_file, run_dir, home = tmp / "space.yaml", tmp / "run", tmp / "home"
    space_file.write_text(yaml.safe_dump(data))
    run_dir.mkdir()
    home.mkdir()
    driver = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import {__name__} as t; "
              f"t._search_with_faults({str(space_file)!r}, {str(run_dir)!r})")
    env = {**os.environ, **RAY_ENV, "HOME": str(home)}
    result = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-5000:]
    return run_dir, result.stderr


def _trials(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="tiny", storage=open_storage(run_dir, None))
    return [t for t in study.get_trials() if not TrialRecord.of(t).rejected]  # over budget or a duplicate


@pytest.mark.slow
def test_a_retry_on_another_node_resumes_from_tunes_checkpoint(faulty_search):
    run_dir, stderr = faulty_search
    trial = trial_by_number(optuna.load_study(study_name="tiny", storage=open_storage(run_dir, None)), 0)
    record = TrialRecord.of(trial)
    assert trial.state == TrialState.COMPLETE and record.handset and record.status is None
    assert [row["epoch"] for row in record.history] == [1, 2, 3, 4]  # each epoch once
    # Tune's own log of the trial: each epoch once, its counter equal to the epoch, and the retry
    # (another process) restored after epoch 2 and trained epochs 3 and 4 only.
    (results,) = (run_dir / "ray" / "tiny").glob("0000-*/result.json")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["epoch"], r["training_iteration"]) for r in rows] == [(e, e) for e in range(1, EPOCHS + 1)]
    assert [r["iterations_since_restore"] for r in rows] == [1, 2, 1, 2]
    assert rows[0]["pid"] == rows[1]["pid"] != rows[2]["pid"] == rows[3]["pid"]
    folder = ray_worker.trial_folder(run_dir, 0)
    assert [row["epoch"] for row in json.loads((folder / "result.json").read_text())["history"]] == [1, 2, 3, 4]
    assert (folder / "metrics.csv").read_text().count("\n") == EPOCHS + 1
    # training and Tune both dropped the finished trial's checkpoints (no --keep-checkpoints)
    assert not (folder / POINTER).exists() and not list(results.parent.glob("checkpoint_*"))
    epoch_lines = [line for line in stderr.splitlines() if line.startswith("trial 0: epoch")]
    assert [line.split()[3] for line in epoch_lines] == ["1", "2", "3", "4"]
    assert all("top-1" in line and "img/s" in line for line in epoch_lines)


@pytest.mark.slow
def test_a_trial_that_always_fails_is_failed_with_its_error(faulty_search):
    run_dir, _ = faulty_search
    (failed,) = [t for t in _trials(run_dir) if t.number != 0]
    record = TrialRecord.of(failed)
    assert failed.state == TrialState.FAIL and record.status == FAILED
    assert record.reason.startswith(f"RuntimeError: injected fault: this trial always fails "
                                    f"(failed {ray_backend.MAX_FAILURES + 1} times; ")
    assert record.reason.endswith(f"{run_dir}/ray/tiny/{failed.number:04d}-{record.ray_trial_id}/error.txt)")
