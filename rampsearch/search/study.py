"""The study layer: where a search's trials live, and every way rampsearch opens, reads or mends them.

A search's trials live in one Optuna study, whichever backend ran them: a journal file in the run
directory (`study.journal`, safe for several processes on one machine) or an RDB URL
(`postgresql://...`, `sqlite:///...`) shared by machines. The backends, retraining and the report
depend on this module, never on each other.

Optuna private members are touched in two places only, each pinned to the installed Optuna by a
test: `_write_attrs` here (writing a record on a trial some other process left RUNNING;
tests/test_study.py) and rampsearch.search.rdb's outage-tolerant storage (the storage calls Optuna
makes; tests/test_faults_rdb.py).
"""
from __future__ import annotations

import json
import os
import random
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import UserError
from .journal import check_journal
from .rdb import open_rdb
from .distinct import DistinctSampler, joint_tpe
from .record import INTERRUPTED, TrialRecord, optuna_retry_of
from .score import TOP1
from .space import SearchSpace

JOURNAL = "study.journal"
# A proposal that brings nothing new (over budget, or a candidate scored already) costs milliseconds; a
# search stops after this many in a row (each the last of rampsearch.search.distinct's redraws): the
# sampler is stuck in an over-budget region, or has nothing new left to propose where it looks.
MAX_STALLED_PROPOSALS = 50
SHARED_SEED_RANGE = 2**31  # a random seed offset for a process joining an RDB study (see open_study)

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


def make_sampler(space: SearchSpace, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The space's sampler, seeded with `seed` (default: search.seed). TPE and NSGA-II redraw proposals
    that repeat a scored candidate (rampsearch.search.distinct); GP's draws are costly optimizations that
    would return the same point again, CMA-ES and random draw alone."""
    name, trials = space.search.sampler, space.search.trials
    seed = space.search.seed if seed is None else seed
    if name == "tpe":
        return DistinctSampler(joint_tpe(seed, _share(trials, STARTUP_TRIALS)), space.proposal, seed)
    if name == "nsga2":
        base = optuna.samplers.NSGAIISampler(seed=seed, population_size=_share(trials, NSGA2_POPULATION))
        return DistinctSampler(base, space.proposal, seed)
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

def open_storage(run_dir: Path, url: str | None) -> optuna.storages.BaseStorage:
    """The study's storage: `url` (an RDB), or the run directory's journal file."""
    if url:
        return open_rdb(url, _enqueue_retry)
    path = run_dir / JOURNAL
    lock = optuna.storages.journal.JournalFileOpenLock(str(path))
    check_journal(path, lock)  # a torn last record is set aside; other damage stops, naming the line
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock))


# -- studies and runs -------------------------------------------------------------------------------

def open_study(space: SearchSpace, run_dir: Path, study_name: str, storage_url: str | None,
               seed: int | None = None) -> tuple[optuna.Study, int]:
    """(study, its sampler's seed): create or load the study; the process that creates it enqueues
    the hand-set ramp.

    The sampler's seed is `seed` if given (`--workers` process w: the first process's seed + w),
    else search.seed for the study's first process, so a search is reproducible. A process that
    joins a study in a database from another machine cannot know the other processes' seeds, so it
    adds a random offset (a run directory's journal only ever has one search command and its
    workers, so it keeps search.seed however often it is resumed). Different seeds make equal
    proposals unlikely; `duplicate_of` makes training one twice impossible.
    """
    storage = open_storage(run_dir, storage_url)
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, directions=space.directions)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=study_name, storage=storage), False
        directions = [d.name.lower() for d in study.directions]
        if directions != space.directions:
            raise UserError(f"study {study_name!r} optimizes {directions}, this space {space.directions} (its "
                            f"search.score is {space.search.score!r}); set search.score to the study's, or use "
                            "another --study")
    if seed is None:
        joined = storage_url is not None and not created
        seed = space.search.seed + (random.SystemRandom().randrange(1, SHARED_SEED_RANGE) if joined else 0)
    study.sampler, study.pruner = make_sampler(space, seed), make_pruner(space)
    study.enqueue_trial(space.handset_params(), skip_if_exists=True)
    return study, seed


def search_metadata(run_dir: Path) -> dict[str, Any]:
    """The run directory's search.json ({} before the first search)."""
    path = run_dir / "search.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_score(run_dir: Path) -> str | None:
    """The score the search in `run_dir` ranks by (rampsearch.search.score), None before its first search.

    A run keeps the score its study was created with, whatever the space's default is now: searches
    before `search.score` existed ranked by top-1.
    """
    meta = search_metadata(run_dir)
    return meta.get("score", TOP1) if meta else None


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def fail_trial(study: optuna.Study, trial: FrozenTrial, record: TrialRecord) -> None:
    """Mark a trial another process left RUNNING as FAIL, writing `record`'s status and reason on it."""
    _write_attrs(study, trial, record)
    study.tell(trial.number, state=TrialState.FAIL)


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue a retry of every interrupted trial that has none yet; returns their numbers."""
    trials = study.get_trials(deepcopy=False)
    retried, out = _retried(trials), []
    for trial in trials:
        if trial.state == TrialState.FAIL and TrialRecord.of(trial).interrupted and trial.number not in retried:
            _enqueue_retry(study, trial)
            out.append(trial.number)
    return out


def _enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue `trial` again: the same params, training in its original's folder, so the training
    resumes from the original's last good checkpoint (a retry of a retry keeps the first folder).

    Also the RDB heartbeat callback: a trial whose process fell silent was failed (by the one process
    that won the race to fail it); its record cannot be written any more (a finished trial is
    read-only), so its retry's `retry_of` is what says it was interrupted.
    """
    record = TrialRecord.of(trial)
    retry = TrialRecord(retry_of=trial.number, folder=record.folder if record.folder is not None else trial.number)
    study.enqueue_trial(trial.params, user_attrs=retry.attrs())


def counted_trials(trials: list[FrozenTrial]) -> tuple[int, int]:
    """(trials that count towards --trials, candidates rejected before training).

    A trial counts when it trained or is training. An interrupted trial never counts (its retry
    does, once it starts), nor does any trial that has a retry. Over-budget and duplicate
    candidates never trained, so they do not count.
    """
    retried = _retried(trials)
    active = rejected = 0
    for t in trials:
        record = TrialRecord.of(t)
        if record.rejected:
            rejected += 1
        elif t.state != TrialState.WAITING and not (
                t.state == TrialState.FAIL and (record.interrupted or t.number in retried)):
            active += 1
    return active, rejected


def interrupted_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials interrupted by a fault: marked so, or failed by an RDB heartbeat and retried."""
    retried = _retried(trials)
    return {t.number for t in trials if t.state == TrialState.FAIL
            and (TrialRecord.of(t).interrupted or t.number in retried)}


def _retried(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that have a retry: rampsearch's (`retry_of`), or Optuna's own in studies of
    rampsearch 0.1 (`optuna_retry_of`)."""
    return {r for t in trials for r in (TrialRecord.of(t).retry_of, optuna_retry_of(t)) if r is not None}


def duplicate_of(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of an earlier trial that trained, trains or will retry the same candidate, if any.

    A candidate is its architecture and its ramp as built (different sampler params can snap to the
    same valid ramp). Only the later of two equal proposals is a duplicate, so two processes proposing
    the same candidate at once train it exactly once. A retry is never a duplicate of its original.
    """
    record = TrialRecord.of(trial)
    if record.retry_of is not None:
        return None
    for earlier in study.get_trials(deepcopy=False):
        other = TrialRecord.of(earlier)
        if (earlier.number < trial.number and other.candidate == record.candidate
                and earlier.state != TrialState.WAITING and not other.rejected):
            return earlier.number
    return None


def repeat_answer(study: optuna.Study, earlier: int) -> tuple[list[float], float | None] | None:
    """(values, standard error) that a duplicate of trial `earlier` is answered with: that trial's own, if
    it completed; None while it trains, or if it was pruned or failed (the duplicate is then rejected)."""
    trial = trial_by_number(study, earlier)
    if trial.state != TrialState.COMPLETE:
        return None
    return list(trial.values), TrialRecord.of(trial).score_se


def stalled_proposals(trials: list[FrozenTrial]) -> int:
    """How many of the latest finished proposals in a row brought nothing new (over budget or duplicates)."""
    run = 0
    for t in sorted(trials, key=lambda t: t.number, reverse=True):
        if not t.state.is_finished():
            continue
        if not TrialRecord.of(t).rejected:
            break
        run += 1
    return run


def mend(study: optuna.Study) -> list[int]:
    """Make the study true before anything counts it; returns the numbers of trials retried now.

    Trials whose process died are failed as interrupted: through RDB heartbeats (any machine, after
    the grace period) and, at once, by a dead worker pid on this machine (the journal has no
    heartbeats). Each is then enqueued again to resume in its folder. Every process does this when
    it starts and before it counts trials.
    """
    with warnings.catch_warnings():  # Optuna has marked it experimental since 2.9 (2021) without a change
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # nothing to do on the journal
    fail_orphans(study)
    return retry_interrupted(study)


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
    """Mark RUNNING trials whose worker process on this host is dead as interrupted; returns their numbers."""
    host, found = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = TrialRecord.of(trial).worker or {}
        if worker.get("host") == host and not _pid_alive(worker.get("pid", -1)):
            try:
                fail_trial(study, trial, TrialRecord(status=INTERRUPTED, reason=reason))
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process of a shared study failed it first
            found.append(trial.number)
    return found


def _write_attrs(study: optuna.Study, trial: FrozenTrial, record: TrialRecord) -> None:
    """Write a record on a trial this process holds no `optuna.Trial` for (Optuna private members)."""
    storage, trial_id = study._storage, trial._trial_id
    record.save(lambda key, value: storage.set_trial_user_attr(trial_id, key, value))
