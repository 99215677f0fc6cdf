"""RDB studies (`--storage postgresql://...`): checking the URL, opening the storage, riding out outages.

Several processes, on one machine or many, share one study in a database. Optuna's heartbeats tell
a live trial from one whose process died: a running trial's process writes a heartbeat every
HEARTBEAT_INTERVAL_S, and a trial silent for HEARTBEAT_GRACE_S is failed by whichever process
looks next, which hands it to `on_stale` (rampsearch.search.study retries it in its folder).

A database that stops answering (a restart, a failover, a network cut) does not end the search:
every call Optuna makes on the storage is retried until the database answers again, for up to
DB_OUTAGE_S, and only then fails with `DatabaseUnavailable`, one line saying what to do.
"""
from __future__ import annotations

import functools
import logging
import random
import threading
import time
import warnings
from typing import Any, Callable, TypeVar

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

from ..errors import RunFailed, UserError
from ..redact import redact

# RDB schemes and the driver each needs (named in the error when it is missing).
RDB_DRIVERS = {"postgresql": "psycopg[binary]", "mysql": "PyMySQL", "sqlite": None}
RDB_OPEN_ATTEMPTS = 5  # processes started together race to create the schema; the losers retry
HEARTBEAT_INTERVAL_S = 30  # a running trial's process says it is alive this often ...
HEARTBEAT_GRACE_S = 120  # ... and after this long without a word its trial is failed and retried

# How long a search waits for a database that stopped answering before it gives up. Two minutes
# ride out a restart (seconds) or a managed database's failover (up to a minute or two). It equals
# the heartbeat grace: by the time a search gives up, its running trial's last heartbeat is older
# than the grace, so rerunning the command retries that trial at once, from its checkpoint.
DB_OUTAGE_S: float = HEARTBEAT_GRACE_S
# Retries back off exponentially from the first delay (a dropped connection is often replaced on
# the next try) to the cap, which bounds how long after the database is back the search notices.
# A refused connection costs the server nothing, so the cap can be short.
RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 2.0

StaleTrialCallback = Callable[[optuna.Study, FrozenTrial], None]
T = TypeVar("T")
log = logging.getLogger(__name__)


class DatabaseUnavailable(RunFailed):
    """The study database did not answer for DB_OUTAGE_S; the message is one line saying what to do."""

    def __init__(self, where: str, down_s: float, error: Exception) -> None:
        super().__init__(f"the study database {where} has not answered for {down_s:.0f} s: {_first_line(error)}. "
                         "Rerun the same command once it is back; trials left running are retried from their "
                         "checkpoints")

    @staticmethod
    def behind(exc: BaseException) -> DatabaseUnavailable | None:
        """The DatabaseUnavailable that `exc` was raised from or while handling, if any.

        Optuna's trial loop, unable to record a trial's end, raises an UnboundLocalError of its own
        while handling the DatabaseUnavailable (optuna/study/_optimize.py, _run_trial).
        """
        seen: BaseException | None = exc
        while seen is not None and not isinstance(seen, DatabaseUnavailable):
            seen = seen.__cause__ or seen.__context__
        return seen


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


def open_rdb(url: str, on_stale: StaleTrialCallback) -> OutageTolerantStorage:
    """The study database at `url`, with heartbeats; `on_stale` gets each trial failed for silence.

    A database that cannot be reached here is a UserError at once (after a few quick tries): before
    the first answer, a wrong host or port looks the same as an outage.
    """
    from sqlalchemy.exc import SQLAlchemyError

    check_storage_url(url)
    for attempt in range(RDB_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats: "experimental" since Optuna 2.9 (2021), unchanged since
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return OutageTolerantStorage(url, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                                             grace_period=HEARTBEAT_GRACE_S, heartbeat_stale_trial_callback=on_stale)
        except SQLAlchemyError as exc:
            error = exc
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise UserError(f"cannot use the storage {redact(url)}: {type(error).__name__}: {_first_line(error)}")


def _first_line(error: Exception) -> str:
    """The first line of `error`'s message, passwords hidden."""
    return redact(str(error).splitlines()[0]) if str(error) else type(error).__name__


def transient_error(exc: BaseException) -> Exception | None:
    """The SQLAlchemy error behind `exc` if it is worth retrying, else None.

    Transient: a connection SQLAlchemy found dead (the server restarted or crashed under it), or
    any OperationalError, the DB-API's class (PEP 249) for what is outside the program's control: a
    refused connection, a server shutting down or starting up, a deadlock, too many connections.
    Optuna wraps SQLAlchemy's errors in its StorageInternalError, so the causes are followed.
    """
    from sqlalchemy.exc import DBAPIError, OperationalError

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, DBAPIError):
            return cause if cause.connection_invalidated or isinstance(cause, OperationalError) else None
        cause = cause.__cause__
    return None


# Every call Optuna makes on an RDB storage: the public methods of its storage and heartbeat
# interfaces, and the private methods that _CachedStorage (which optuna.create_study puts in front
# of an RDBStorage) calls on it instead of their public forms.
OPTUNA_CALLS = sorted({name for base in (BaseStorage, BaseHeartbeat) for name in vars(base) if not name.startswith("_")}
                      | {"_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
                         "_get_stale_trial_ids"})


def _riding_out(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: OutageTolerantStorage, *args: Any, **kwargs: Any) -> T:
        return self.ride_out(method, self, *args, **kwargs)

    return call


def _ride_out_optuna_calls(cls: type[OutageTolerantStorage]) -> type[OutageTolerantStorage]:
    for name in OPTUNA_CALLS:
        if name not in vars(cls):  # a method the class defines rides out outages itself
            setattr(cls, name, _riding_out(getattr(cls, name)))
    return cls


@_ride_out_optuna_calls
class OutageTolerantStorage(RDBStorage):
    """An RDBStorage whose every call (OPTUNA_CALLS) is retried through a database outage.

    A call that fails on a transient error is retried with exponential backoff until the database
    answers, for up to DB_OUTAGE_S counted from the first failure of the outage: all calls of an
    outage, from any thread, share that one deadline, so a search gives up DB_OUTAGE_S after the
    database stopped answering, not DB_OUTAGE_S per call. Other errors are raised at once.

    What a retry does not guarantee: a call whose commit landed on the server just before the
    connection dropped (before its answer arrived) is repeated. That is harmless for reads and for
    writes of a value (attributes, parameters, intermediate values, heartbeats: written again), and
    for creating a study (optuna.create_study then loads the one that exists), but:
    - creating a trial creates a second one; the first stays RUNNING with no process behind it and
      no heartbeat (so Optuna's stale check passes it over), and counts towards --trials;
    - finishing a trial again raises UpdateFinishedTrialError, and claiming a waiting (enqueued)
      trial again returns False, so the claimer takes another and leaves that one RUNNING.
    The window is the round trip of one COMMIT, so these are rare; nothing here prevents them.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._where = redact(url)
        self._outage_lock = threading.Lock()
        self._outage_since: float | None = None  # time.monotonic() of the outage's first failure
        self._calls = threading.local()  # .active: this thread is inside a call that retries
        # pool_pre_ping: the pool tests a connection before handing it out, so a retry after a
        # server restart gets a fresh connection instead of one the restart killed.
        super().__init__(url, engine_kwargs={"pool_pre_ping": True}, **kwargs)

    def record_heartbeat(self, trial_id: int) -> None:
        """Heartbeats run in Optuna's heartbeat thread, which an exception would end with a traceback.

        So a heartbeat that gives up is dropped: the trial's own thread meets the same outage at
        its next call and gives up there, with the one-line error.
        """
        try:
            self.ride_out(super().record_heartbeat, trial_id)
        except DatabaseUnavailable:
            pass

    def ride_out(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """call(*args, **kwargs), retried on transient errors until the outage lasted DB_OUTAGE_S."""
        if getattr(self._calls, "active", False):  # one call of ours inside another: the outer one retries
            return call(*args, **kwargs)
        self._calls.active = True
        try:
            return self._retrying(call, *args, **kwargs)
        finally:
            self._calls.active = False

    def _retrying(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        delay = RETRY_FIRST_DELAY_S
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as exc:
                error = transient_error(exc)
                if error is None:
                    raise
                down_s = self._outage_began(error)
                if down_s >= DB_OUTAGE_S:
                    raise DatabaseUnavailable(self._where, down_s, error) from exc
                # Jitter, so that processes which lost the database together do not retry in step.
                time.sleep(min(random.uniform(delay / 2, delay), DB_OUTAGE_S - down_s))
                delay = min(2 * delay, RETRY_MAX_DELAY_S)
            else:
                self._outage_ended()
                return result

    def _outage_began(self, error: Exception) -> float:
        """Seconds since the outage began (now, if this is its first failure, which is logged)."""
        now = time.monotonic()
        with self._outage_lock:
            if self._outage_since is None:
                self._outage_since = now
                log.warning("rampsearch: the study database %s is not answering: %s. Retrying for up to %.0f s",
                            self._where, _first_line(error), DB_OUTAGE_S)
            return now - self._outage_since

    def _outage_ended(self) -> None:
        with self._outage_lock:
            if self._outage_since is not None:
                down_s = time.monotonic() - self._outage_since
                log.warning("rampsearch: the study database is back after %.1f s", down_s)
                self._outage_since = None
