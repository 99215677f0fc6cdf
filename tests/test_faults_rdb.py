"""A study database that stops answering: an outage is ridden out, a longer one stops the search in one line.

The outages are real: a throwaway PostgreSQL server (tests/pg.py) stopped and started again on the
same port while a search uses it.
"""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState

import pg  # tests/pg.py
from rampsearch import cli
from rampsearch.search import rdb
from rampsearch.search.methods import proxy as proxy_method
from rampsearch.search.rdb import DatabaseUnavailable, OutageTolerantStorage, transient_error
from rampsearch.search.record import TrialRecord

pytestmark = pytest.mark.faults
needs_postgres = pytest.mark.skipif(pg.unavailable_reason() is not None, reason=str(pg.unavailable_reason()))

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
CLI = [sys.executable, str(ROOT / "cli.py")]
STUDY = "s"
PASSWORD = "s3cret-password"  # in pg's URLs; it must never show
EPOCHS = 5  # proxy epochs: a trial trains for seconds, so the outage surely begins inside one
OUTAGE_S = 10  # the outage
SEARCH_TIMEOUT_S = 300
SHORT_BOUND_S = 2.0  # DB_OUTAGE_S for the outages that outlast it


def _noop(study: optuna.Study, trial: FrozenTrial) -> None:
    pass


def _sqlite_storage(tmp_path: Path) -> OutageTolerantStorage:
    return rdb.open_rdb(f"sqlite:///{tmp_path / 'study.db'}", _noop)


def _long_space(tmp_path: Path) -> Path:
    space, text = tmp_path / "space.yaml", TINY.read_text()
    space.write_text(text.replace("  epochs: 2\n  data:", f"  epochs: {EPOCHS}\n  data:"))
    assert space.read_text() != text, "tiny_space.yaml no longer sets the proxy's epochs as expected"
    return space


def _search(space: Path, run_dir: Path, *storage: str) -> list[str]:
    return [*CLI, "search", str(space), *storage, "--study", STUDY, "--trials", "3", "--out", str(run_dir),
            "--quiet", "--json"]


def _outcome(trials: list[FrozenTrial]) -> list[tuple[Any, ...]]:
    """What a search decided and measured, trial by trial: no times, pids or hosts."""
    return [(t.number, t.state.name, t.params, t.values,
             [(row["epoch"], row["top1"], row["loss"]) for row in TrialRecord.of(t).history]) for t in trials]


# -- which errors are retried -----------------------------------------------------------------------

def _wrapped(error: Exception) -> StorageInternalError:
    """`error` as Optuna's RDBStorage raises it: the cause of a StorageInternalError."""
    wrapped = StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = error
    return wrapped


def test_lost_connections_are_transient_and_integrity_errors_are_not():
    refused = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    dropped = sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection closed"), connection_invalidated=True)
    duplicate = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    assert transient_error(_wrapped(refused)) is refused
    assert transient_error(dropped) is dropped
    assert transient_error(_wrapped(duplicate)) is None
    assert transient_error(ValueError("no database involved")) is None


def test_a_non_transient_error_is_raised_at_once(tmp_path):
    storage, attempts = _sqlite_storage(tmp_path), []

    def duplicate_key() -> None:
        attempts.append(time.monotonic())
        raise _wrapped(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))

    with pytest.raises(StorageInternalError):
        storage.ride_out(duplicate_key)
    assert len(attempts) == 1
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], STUDY)
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):  # a real one, raised by the storage itself
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], STUDY)
    assert storage.get_study_id_from_name(STUDY) == study_id


def test_a_transient_error_is_retried_until_the_call_succeeds(tmp_path, caplog):
    storage, attempts = _sqlite_storage(tmp_path), []

    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise _wrapped(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")))
        return "answer"

    with caplog.at_level("WARNING", logger=rdb.__name__):
        assert storage.ride_out(flaky) == "answer"
    assert len(attempts) == 3
    # backoff: each wait is at least half the nominal delay, which doubles from the first
    assert attempts[1] - attempts[0] >= rdb.RETRY_FIRST_DELAY_S / 2
    assert attempts[2] - attempts[1] >= rdb.RETRY_FIRST_DELAY_S
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "not answering" in messages[0] and "back after" in messages[1]


def test_every_call_optuna_makes_on_the_storage_rides_out_outages():
    public = {name for base in (BaseStorage, BaseHeartbeat) for name in vars(base) if not name.startswith("_")}
    # _CachedStorage (in front of every RDBStorage a study uses) calls some private methods instead
    called_by_cache = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_CachedStorage)))
    for name in public | called_by_cache:
        assert name in rdb.OPTUNA_CALLS
        assert getattr(OutageTolerantStorage, name) is not getattr(RDBStorage, name), name


# -- real outages -----------------------------------------------------------------------------------

@needs_postgres
def test_an_outage_longer_than_the_bound_fails_in_one_line_and_the_storage_recovers_after(monkeypatch):
    monkeypatch.setattr(rdb, "DB_OUTAGE_S", SHORT_BOUND_S)
    with pg.running_server() as server:
        storage = rdb.open_rdb(server.url, _noop)
        study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], STUDY)
        trial_id = storage.create_new_trial(study_id)
        server.stop("immediate")
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as info:
            storage.get_all_trials(study_id)
        assert SHORT_BOUND_S <= time.monotonic() - began < SHORT_BOUND_S + rdb.RETRY_MAX_DELAY_S + 1
        message = str(info.value)
        assert "\n" not in message and PASSWORD not in message
        assert f"postgresql://rampsearch:***@127.0.0.1:{server.port}/postgres" in message
        assert f"has not answered for {SHORT_BOUND_S:.0f} s" in message and "Rerun the same command" in message
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable):  # the outage's deadline has passed: one try, no more waiting
            storage.get_trial_id_from_study_id_trial_number(study_id, 0)
        assert time.monotonic() - began < 1
        storage.record_heartbeat(trial_id)  # gives up without raising: it runs in Optuna's heartbeat thread
        server.start()
        assert len(storage.get_all_trials(study_id)) == 1  # the storage works again once the database is back


@needs_postgres
def test_the_cli_stops_in_one_line_when_the_database_stays_away(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rdb, "DB_OUTAGE_S", SHORT_BOUND_S)
    with pg.running_server() as server:
        train = proxy_method.run_trial

        def database_stops_as_training_starts(*args: Any, **kwargs: Any) -> Any:
            server.stop("fast")
            return train(*args, **kwargs)

        monkeypatch.setattr(proxy_method, "run_trial", database_stops_as_training_starts)  # where the method calls it
        began = time.monotonic()
        with pytest.raises(SystemExit) as info:
            cli.main(["search", str(TINY), "--storage", server.url, "--study", STUDY, "--trials", "2",
                      "--out", str(tmp_path / "run"), "--quiet", "--json"])
        seconds = time.monotonic() - began
    err = capsys.readouterr().err
    assert info.value.code == 1, err
    assert "Traceback" not in err and PASSWORD not in err
    failed = [line for line in err.splitlines() if line.startswith("rampsearch search: failed:")]
    assert len(failed) == 1 and "has not answered" in failed[0], err
    assert seconds < 60  # bounded by the outage bound, plus opening the study and one training


def _stderr_lines(process: subprocess.Popen[str], lines: list[tuple[float, str]]) -> threading.Thread:
    """A thread reading `process`'s stderr into `lines` as (time.monotonic(), line)."""
    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append((time.monotonic(), line))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _wait_for_training(storage: RDBStorage, process: subprocess.Popen[str]) -> int:
    """The number of the search's second trial, once it has trained an epoch (it is inside a trial)."""
    deadline = time.monotonic() + SEARCH_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
        except KeyError:  # the search has not created the study yet
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if any(t.state.is_finished() for t in trials) and running and TrialRecord.of(running[0]).history:
            return running[0].number
        time.sleep(0.2)
    process.kill()
    pytest.fail("the search never reached its second trial's first epoch")


@needs_postgres
def test_a_ten_second_outage_mid_trial_is_ridden_out_with_the_same_results(tmp_path):
    space = _long_space(tmp_path)
    began = time.monotonic()
    subprocess.run(_search(space, tmp_path / "reference"), check=True, capture_output=True, timeout=SEARCH_TIMEOUT_S)
    uninterrupted_s = time.monotonic() - began
    reference = optuna.load_study(study_name=STUDY, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "reference" / "study.journal"))))

    with pg.running_server() as server:
        watcher = RDBStorage(server.url, engine_kwargs={"pool_pre_ping": True})  # also creates the tables
        began = time.monotonic()
        with open(tmp_path / "summary.json", "w") as summary:
            process = subprocess.Popen(_search(space, tmp_path / "run", "--storage", server.url),
                                       stdout=summary, stderr=subprocess.PIPE, text=True)
        lines: list[tuple[float, str]] = []
        reader = _stderr_lines(process, lines)
        training = _wait_for_training(watcher, process)
        server.stop("fast")
        time.sleep(OUTAGE_S)
        server.start()
        restarted, restarted_at = time.monotonic(), datetime.now()
        try:
            process.wait(timeout=SEARCH_TIMEOUT_S)
        finally:
            process.kill()
        reader.join(timeout=10)
        interrupted_s = time.monotonic() - began
        err = "".join(line for _, line in lines)
        assert process.returncode == 0, err[-3000:]
        assert PASSWORD not in (tmp_path / "summary.json").read_text() + err and "Traceback" not in err
        began_lines = [line for _, line in lines if "is not answering" in line]
        back = [(at, line) for at, line in lines if "is back after" in line]
        assert len(began_lines) == 1 and len(back) == 1, err  # one line as it begins, one as it ends
        trials = optuna.load_study(study_name=STUDY, storage=server.url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    completed = trials[training].datetime_complete
    assert completed is not None and completed > restarted_at  # the outage fell inside this trial, which went on
    # The premise of comparing with a journal search: both propose the same candidates (same seed)
    assert [TrialRecord.of(t).sampler_seed for t in trials] == \
        [TrialRecord.of(t).sampler_seed for t in reference.get_trials()], "the searches' sampler seeds differ"
    assert _outcome(trials) == _outcome(reference.get_trials())
    recovery_s = back[0][0] - restarted
    print(f"\ndatabase outage of {OUTAGE_S} s mid-trial: search back {recovery_s:.1f} s after the server was, "
          f"{back[0][1].strip()!r}; search {interrupted_s:.1f} s against {uninterrupted_s:.1f} s uninterrupted "
          "(journal)")
    assert recovery_s < rdb.RETRY_MAX_DELAY_S + 1
