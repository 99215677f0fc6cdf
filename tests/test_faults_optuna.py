"""Fault injection into real searches with the embedded backend, each checked against an uninterrupted
search of the same space and seed: the same trials complete with the same values, the same best, and
the right counts. The Ray, PostgreSQL-outage, journal and checkpoint faults have files of their own.

The space samples at random (`sampler: random`), so the candidates a search proposes depend on the
seed alone, and trains on CPU, where a training is a pure function of its config, resumed or not.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import pg  # tests/pg.py
from rampsearch.search.record import TrialRecord
from rampsearch.search.study import counted_trials

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
CLI = [sys.executable, str(ROOT / "cli.py")]
EPOCHS, TRIALS = 4, 3
FAULT_TIMEOUT_S = 300  # the longest any search of this file may take (each takes well under a minute)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    data = yaml.safe_load(TINY.read_text())
    data["proxy"]["epochs"], data["search"]["trials"], data["search"]["sampler"] = EPOCHS, TRIALS, "random"
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _command(space_file: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*CLI, "search", str(space_file), "--out", str(run_dir), "--study", "tiny", "--quiet", "--json", *extra]


def _trials(run_dir: Path | None = None, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """Every trial of the study, read straight from its storage (not through rampsearch)."""
    if storage is None:
        backend = optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal"))
        storage = optuna.storages.JournalStorage(backend)
    return optuna.load_study(study_name="tiny", storage=storage).get_trials()


def _completed(trials: list[optuna.trial.FrozenTrial]) -> dict[str, float]:
    """{candidate (its params as JSON): value} of the complete trials."""
    return {json.dumps(t.params, sort_keys=True): t.value for t in trials if t.state == TrialState.COMPLETE}


def _best(trials: list[optuna.trial.FrozenTrial]) -> str:
    return max(_completed(trials).items(), key=lambda item: item[1])[0]


@pytest.fixture(scope="module")
def reference(space_file, tmp_path_factory) -> Path:
    """The run directory of the uninterrupted search every fault is compared with."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(_command(space_file, run_dir), check=True, capture_output=True, timeout=FAULT_TIMEOUT_S)
    return run_dir


def _assert_same_as_reference(run_dir: Path, reference: Path, storage: str | None = None) -> None:
    trials, expected = _trials(run_dir, storage), _trials(reference)
    assert _completed(trials) == _completed(expected)  # the same candidates, the same values
    assert _best(trials) == _best(expected)
    assert counted_trials(trials)[0] == TRIALS  # the interrupted trial does not count; its retry does
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for trial in trials:
        record = TrialRecord.of(trial)
        if trial.state == TrialState.COMPLETE and not record.rejected:  # trained (a repeat answered from an
            # earlier trial never trains): each epoch once, in the trial's record and its folder
            assert [row["epoch"] for row in record.history] == list(range(1, EPOCHS + 1))
            metrics = run_dir / "trials" / f"{record.folder:04d}" / "metrics.csv"
            assert [int(line.split(",")[0]) for line in metrics.read_text().splitlines()[1:]] == \
                list(range(1, EPOCHS + 1))


def _checkpoint_epoch(folder: Path) -> int:
    try:
        return json.loads((folder / "checkpoint.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _kill_when(process: subprocess.Popen, run_dir: Path, epoch: int) -> Path:
    """SIGKILL `process` as soon as the first searched trial (after the hand-set one) has checkpointed
    `epoch` and is still training; returns that trial's folder."""
    deadline = time.monotonic() + FAULT_TIMEOUT_S
    while True:
        folders = sorted((run_dir / "trials").glob("0*"))[1:] if (run_dir / "trials").is_dir() else []
        if folders and _checkpoint_epoch(folders[0]) >= epoch:
            break
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail(f"the search never checkpointed epoch {epoch} of a searched trial in {run_dir}")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (folders[0] / "result.json").exists(), "killed too late: the training had finished"
    return folders[0]


def _rerun(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=FAULT_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def test_a_killed_search_resumes_to_the_same_results(space_file, reference, tmp_path):
    run_dir = tmp_path / "run"
    command = _command(space_file, run_dir)
    folder = _kill_when(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), run_dir,
                        epoch=1)
    kept = {t.number: t.value for t in _trials(run_dir) if t.state == TrialState.COMPLETE}
    _rerun(command)
    trials = _trials(run_dir)
    assert {t.number: t.value for t in trials if t.number in kept} == kept  # never changed or dropped
    (interrupted,) = [t for t in trials if TrialRecord.of(t).interrupted]
    (retry,) = [t for t in trials if TrialRecord.of(t).retry_of == interrupted.number]
    assert retry.state == TrialState.COMPLETE and TrialRecord.of(retry).folder == int(folder.name)
    _assert_same_as_reference(run_dir, reference)


def test_a_damaged_checkpoint_is_never_loaded_and_the_results_stay_the_same(space_file, reference, tmp_path):
    run_dir = tmp_path / "run"
    command = _command(space_file, run_dir)
    folder = _kill_when(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), run_dir,
                        epoch=2)
    damaged = folder / json.loads((folder / "checkpoint.json").read_text())["model"]
    with damaged.open("r+b") as f:  # random bytes in the middle of the weights, the size unchanged
        f.seek(damaged.stat().st_size // 2)
        f.write(os.urandom(64))
    result = _rerun(command)
    assert damaged.name in result.stderr  # the warning names the damaged file
    _assert_same_as_reference(run_dir, reference)


def test_a_torn_journal_tail_is_set_aside_and_the_search_completes(space_file, reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    journal = run_dir / "study.journal"
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1  # where the last record starts
    journal.write_bytes(data[:last + (len(data) - last) // 2])  # a crash halfway through writing it
    result = _rerun(_command(space_file, run_dir))
    assert str(journal) in result.stderr
    (backup,) = [p for p in run_dir.iterdir() if p.name.startswith("study.journal.torn")]
    assert backup.read_bytes() == data[:last + (len(data) - last) // 2]  # the damaged file is kept as it was
    _assert_same_as_reference(run_dir, reference)


def test_the_hand_set_baseline_is_never_pruned(tmp_path):
    from rampsearch.search.optuna_backend import make_objective
    from rampsearch.search.options import SearchOptions
    from rampsearch.search.load import load_space

    class PruneEverything(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    space = load_space(TINY)
    study = optuna.create_study(direction="maximize", pruner=PruneEverything(),
                                sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(space.handset_params())
    objective = make_objective(space, tmp_path, SearchOptions(trials=2, study="tiny"), seed=1)
    while counted_trials(study.trials)[0] < 2:
        study.optimize(objective, n_trials=1)
    handset, searched = [t for t in study.trials if not TrialRecord.of(t).rejected]
    assert TrialRecord.of(handset).handset and handset.state == TrialState.COMPLETE
    assert searched.state == TrialState.PRUNED and "pruned by the" in TrialRecord.of(searched).reason


# -- PostgreSQL: a worker lost on another machine ---------------------------------------------------

HEARTBEAT_S, GRACE_S = 1, 3  # the test's heartbeats, so a silent trial is found in seconds, not minutes


def _driver(args: list[str], host: str | None) -> list[str]:
    """A CLI run with short heartbeats, on a machine called `host` (None: this one's name)."""
    code = ("import socket, sys; import rampsearch.search.rdb as rdb; "
            f"rdb.HEARTBEAT_INTERVAL_S, rdb.HEARTBEAT_GRACE_S = {HEARTBEAT_S}, {GRACE_S}; "
            + (f"socket.gethostname = lambda: {host!r}; " if host else "")
            + f"from rampsearch.cli import main; sys.exit(main({args!r}))")
    return [sys.executable, "-c", code]


@pytest.mark.skipif(pg.unavailable_reason() is not None, reason=str(pg.unavailable_reason()))
def test_a_worker_lost_on_another_machine_is_retried_in_its_folder(space_file, reference, tmp_path):
    run_dir = tmp_path / "run"
    with pg.postgres_server() as url:
        args = _command(space_file, run_dir, "--storage", url)[2:]
        # the first process runs "elsewhere", so only its silence (no heartbeat) tells it is gone
        folder = _kill_when(subprocess.Popen(_driver(args, "elsewhere"), cwd=ROOT, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL), run_dir, epoch=1)
        result = subprocess.run(_driver(args, None), cwd=ROOT, capture_output=True, text=True,
                                timeout=FAULT_TIMEOUT_S)
        assert result.returncode == 0, result.stderr[-3000:]
        trials = _trials(storage=url)
    records = {t.number: TrialRecord.of(t) for t in trials}
    (retry,) = [t for t in trials if records[t.number].retry_of is not None]
    lost = next(t for t in trials if t.number == records[retry.number].retry_of)
    assert lost.state == TrialState.FAIL and records[lost.number].worker["host"] == "elsewhere"
    assert retry.state == TrialState.COMPLETE and records[retry.number].folder == lost.number == int(folder.name)
    # it resumed in its folder: each epoch trained once, and the value is the uninterrupted run's
    metrics = folder / "metrics.csv"
    assert [int(line.split(",")[0]) for line in metrics.read_text().splitlines()[1:]] == list(range(1, EPOCHS + 1))
    assert _completed([retry]).items() <= _completed(_trials(reference)).items()
    assert counted_trials(trials)[0] == TRIALS and not [t for t in trials if t.state == TrialState.RUNNING]
    trained = [json.dumps(t.params, sort_keys=True) for t in trials
               if not records[t.number].rejected and t.number != lost.number]
    assert len(trained) == len(set(trained))  # no candidate trained twice
    seeds = {records[t.number].sampler_seed for t in trials if t.number not in (0, retry.number)}
    assert len(seeds) == 2  # the two processes sampled with their own seeds
    frame_status = json.loads(result.stdout)["counts"]
    assert frame_status["done"] == TRIALS
