"""The study layer: where a search's trials live, and every way rampsearch opens, reads or mends them.

A search's trials live in one Optuna study, whichever backend ran them: a journal file in the run
directory (`study.journal`, safe for several processes on one machine) or an RDB URL
(`postgresql://...`, `sqlite:///...`) shared by machines. The backends, retraining and the report
depend on this module, never on each other.

The only Optuna private members rampsearch touches are behind `_write_attrs` (writing a record on
a trial some other process left RUNNING); tests/test_study.py pins it to the installed Optuna.
"""
from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import UserError
from ..redact import redact
from .record import INTERRUPTED, TrialRecord
from .space import SearchSpace, load_space

JOURNAL = "study.journal"
# Over-budget proposals cost microseconds each; a search gives up after this many per trial it was
# asked for (the embedded backend counts them in all, Ray's in a row): the sampler is stuck in an
# over-budget region and the budget or the space needs loosening.
MAX_OVER_BUDGET_PER_TRIAL = 50

# RDB schemes and the driver each needs (named in the error when it is missing).
RDB_DRIVERS = {"postgresql": "psycopg[binary]", "mysql": "PyMySQL", "sqlite": None}
RDB_OPEN_ATTEMPTS = 5  # processes started together race to create the schema; the losers retry
HEARTBEAT_INTERVAL_S = 30  # RDB: a running trial's process says it is alive this often ...
HEARTBEAT_GRACE_S = 120  # ... and after this long without a word its trial is failed and retried
HEARTBEAT_MAX_RETRY = 2  # how often a trial whose process died is retried through heartbeats

# Samplers: the first trials are drawn at random (TPE, GP) or form the first generation (NSGA-II).
# A third of the trial budget, within these bounds: fewer gives the model nothing to learn from,
# more wastes a small search on random draws.
STARTUP_SHARE = 1 / 3
STARTUP_TRIALS = (2, 10)
NSGA2_POPULATION = (4, 50)
# Median pruner: judge no trial before two have finished, nor any trial on its first epoch (a proxy
# training's first epoch is mostly warm-up and says little about where it ends).
MEDIAN_STARTUP_TRIALS = 2
MEDIAN_WARMUP_EPOCHS = 1


def _share(trials: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return min(high, max(low, int(trials * STARTUP_SHARE)))


def make_sampler(space: SearchSpace, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The space's sampler, seeded with search.seed + worker (workers must not draw the same points)."""
    name, seed, trials = space.search.sampler, space.search.seed + worker, space.search.trials
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=_share(trials, STARTUP_TRIALS))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=_share(trials, NSGA2_POPULATION))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=_share(trials, STARTUP_TRIALS))
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    name = space.search.pruner
    if space.multi_objective or name == "none":  # Optuna cannot prune multi-objective studies
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.proxy.epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS)


# -- storage ----------------------------------------------------------------------------------------

def check_storage_url(url: str) -> None:
    """Refuse an unsupported scheme or a missing driver, naming what would work."""
    scheme, sep, _ = url.partition("://")
    dialect, _, driver = scheme.partition("+")
    if not sep or dialect not in RDB_DRIVERS:
        raise UserError(f"--storage {redact(url)}: unsupported storage; expected a URL of "
                        f"{', '.join(f'{s}://' for s in RDB_DRIVERS)} (e.g. postgresql://user:password@host:5432/db), "
                        "or leave --storage out for a journal file in the run directory")
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        create_engine(url).dispose()  # loads the dialect and its driver; connects to nothing
    except NoSuchModuleError:
        raise UserError(f"--storage {redact(url)}: SQLAlchemy has no dialect {scheme!r}") from None
    except ArgumentError as exc:
        raise UserError(f"--storage {redact(url)}: not a valid database URL ({redact(str(exc))})") from None
    except ImportError as exc:
        package = RDB_DRIVERS[dialect] if not driver else driver
        raise UserError(f"--storage {redact(url)}: its database driver is not installed ({exc.name}); "
                        f"install it with `pip install '{package}'`") from None


def open_storage(run_dir: Path, url: str | None) -> optuna.storages.BaseStorage:
    """The study's storage: `url` (an RDB), or the run directory's journal file."""
    if url:
        return _open_rdb(url)
    path = run_dir / JOURNAL
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path))))


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    from sqlalchemy.exc import SQLAlchemyError

    check_storage_url(url)
    for attempt in range(RDB_OPEN_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=HEARTBEAT_MAX_RETRY))
        except SQLAlchemyError as exc:
            error = exc
            time.sleep(0.5 + random.random() * (attempt + 1))
    first_line = redact(str(error).splitlines()[0] if str(error) else "")
    raise UserError(f"cannot use the storage {redact(url)}: {type(error).__name__}: {first_line}")


# -- studies and runs -------------------------------------------------------------------------------

def open_study(space: SearchSpace, run_dir: Path, study_name: str, storage_url: str | None,
               worker: int = 0) -> optuna.Study:
    """Create or load the study; the first process to create it enqueues the hand-set ramp."""
    study = optuna.create_study(study_name=study_name, storage=open_storage(run_dir, storage_url),
                                directions=space.directions, sampler=make_sampler(space, worker),
                                pruner=make_pruner(space), load_if_exists=True)
    study.enqueue_trial(space.handset_params(), skip_if_exists=True)
    return study


def search_metadata(run_dir: Path) -> dict[str, Any]:
    """The run directory's search.json ({} before the first search)."""
    path = run_dir / "search.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load_run(run_dir: str | Path, storage: str | None = None) -> tuple[SearchSpace, optuna.Study]:
    """(space, study) of a search's run directory; an RDB study needs the same `storage` URL again."""
    run_dir = Path(run_dir)
    if not (run_dir / "space.yaml").is_file():
        raise UserError(f"{run_dir} is not a search run directory (no space.yaml); run `rampsearch search` first")
    meta = search_metadata(run_dir)
    space = load_space(run_dir / "space.yaml", meta.get("set"))
    if meta.get("storage_kind") == "rdb" and not storage:
        raise UserError(f"the study of {run_dir} lives in {meta['storage']}; pass the same --storage URL")
    if not storage and not (run_dir / JOURNAL).is_file():
        raise UserError(f"{run_dir} has no study yet ({JOURNAL} is missing); run `rampsearch search` first")
    name = meta.get("study", space.name)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(run_dir, storage))
    except KeyError:
        raise UserError(f"no study named {name!r} in {redact(storage) if storage else run_dir / JOURNAL}") from None
    return space, study


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def fail_trial(study: optuna.Study, trial: FrozenTrial, record: TrialRecord) -> None:
    """Mark a trial another process left RUNNING as FAIL, writing `record`'s status and reason on it."""
    _write_attrs(study, trial, record)
    study.tell(trial.number, state=TrialState.FAIL)


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue a retry of every interrupted trial that has none yet; returns their numbers.

    A retry has the same params and trains in its original's folder, so its training resumes from
    the original's last checkpoint.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {TrialRecord.of(t).retry_of for t in trials} | _heartbeat_retried(trials)
    out = []
    for trial in trials:
        record = TrialRecord.of(trial)
        if trial.state == TrialState.FAIL and record.interrupted and trial.number not in retried:
            retry = TrialRecord(retry_of=trial.number,
                                folder=record.folder if record.folder is not None else trial.number)
            attrs: dict[str, Any] = {}
            retry.save(attrs.__setitem__)
            study.enqueue_trial(trial.params, user_attrs=attrs)
            out.append(trial.number)
    return out


def counted_trials(trials: list[FrozenTrial]) -> tuple[int, int]:
    """(trials that count towards --trials, over-budget candidates rejected before training).

    A trial counts when it trained or is training. An interrupted trial never counts (its retry
    does, once it starts), nor does a trial an RDB heartbeat failed and retried. Over-budget
    candidates never trained, so they do not count.
    """
    retried = _heartbeat_retried(trials)
    active = infeasible = 0
    for t in trials:
        record = TrialRecord.of(t)
        if record.over_budget:
            infeasible += 1
        elif t.state != TrialState.WAITING and not (
                t.state == TrialState.FAIL and (record.interrupted or t.number in retried)):
            active += 1
    return active, infeasible


def _heartbeat_retried(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials an RDB heartbeat failed and enqueued again (RetryHeartbeatStaleTrialCallback
    marks each retry with its original's number; its own accessor for it is experimental and warns)."""
    return {t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs}


def worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphans(study: optuna.Study, reason: str = "interrupted (its worker process died)") -> list[int]:
    """Mark RUNNING trials whose worker process on this host is dead as interrupted; returns their numbers.

    RDB storages do this through heartbeats; the journal file has none, so a trial left RUNNING by
    a killed process on this host is recognised by its worker's pid.
    """
    host, found = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = TrialRecord.of(trial).worker or {}
        if worker.get("host") == host and not _pid_alive(worker.get("pid", -1)):
            fail_trial(study, trial, TrialRecord(status=INTERRUPTED, reason=reason))
            found.append(trial.number)
    return found


def _write_attrs(study: optuna.Study, trial: FrozenTrial, record: TrialRecord) -> None:
    """Write a record on a trial this process holds no `optuna.Trial` for (Optuna private members)."""
    storage, trial_id = study._storage, trial._trial_id
    record.save(lambda key, value: storage.set_trial_user_attr(trial_id, key, value))
