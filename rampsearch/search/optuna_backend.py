"""The embedded backend: Optuna in this process (and `--workers N` processes), no server.

Storage: a journal file in the run directory (safe for several processes on one machine), or
`--storage postgresql://...` so processes on several machines work on one study. Each worker
repeats `study.optimize(n_trials=1)` until the study holds `trials` trained trials, so the count
is shared by all workers and over-budget candidates (rejected before training) do not use it up.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
import socket
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..errors import UserError
from .options import SearchOptions
from .progress import Progress
from .results import redact_url
from .space import SearchSpace, load_space
from .trial import admit, run_trial, train_config

# An infeasible candidate costs microseconds; this bounds a sampler that keeps proposing them.
MAX_INFEASIBLE_PER_TRIAL = 50


def make_sampler(space: SearchSpace, worker: int = 0) -> optuna.samplers.BaseSampler:
    name, seed = space.search["sampler"], space.search["seed"] + worker  # workers must not draw the same points
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, space.search["trials"] // 3)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(4, space.search["trials"] // 3)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(2, space.search["trials"] // 3)))
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    name = space.search["pruner"]
    if space.multi_objective or name == "none":  # Optuna cannot prune multi-objective studies
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.proxy.get("epochs", 3))
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def open_storage(run_dir: Path, url: str | None) -> optuna.storages.BaseStorage:
    if url:
        return _open_rdb(url)
    path = run_dir / "study.journal"
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path))))


def _open_rdb(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage; retried because processes started together race to create its tables."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=30, grace_period=120,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
        except SQLAlchemyError as exc:
            error = exc
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise UserError(f"cannot use the storage {redact_url(url)}: {type(error).__name__}: {str(error).splitlines()[0]}")


def open_study(space: SearchSpace, run_dir: Path, study_name: str, storage_url: str | None,
               worker: int = 0) -> optuna.Study:
    """Create or load the study; the first process to create it enqueues the hand-set baseline."""
    study = optuna.create_study(study_name=study_name, storage=open_storage(run_dir, storage_url),
                                directions=space.directions, sampler=make_sampler(space, worker),
                                pruner=make_pruner(space), load_if_exists=True)
    study.enqueue_trial(space.baseline_params(), skip_if_exists=True)
    return study


def _worker_id() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials of dead local workers FAIL and enqueue their params again.

    RDB storages do this through heartbeats; the journal file has none, so a trial left RUNNING by
    a killed process on this host is recognised by its worker's pid.
    """
    host, recovered = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", {})
        if worker.get("host") == host and not _pid_alive(worker.get("pid", -1)):
            study._storage.set_trial_user_attr(trial._trial_id, "error", "interrupted (worker process died)")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={
                "retry_of": trial.number, "folder": trial.user_attrs.get("folder", trial.number)})
            recovered.append(trial.number)
    return recovered


def trained_count(trials: list[optuna.trial.FrozenTrial]) -> tuple[int, int]:
    """(trials that trained or are training, over-budget trials rejected before training).

    A failed trial that was retried counts once, through its retry.
    """
    retried = {t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial")) for t in trials}
    infeasible = sum(1 for t in trials if t.user_attrs.get("infeasible"))
    active = sum(1 for t in trials if t.state != TrialState.WAITING and not t.user_attrs.get("infeasible")
                 and not (t.state == TrialState.FAIL and t.number in retried))
    return active, infeasible


def make_objective(space: SearchSpace, run_dir: Path, device: str | None) -> Callable[[optuna.Trial], Any]:
    def objective(trial: optuna.Trial) -> Any:
        trial.set_user_attr("worker", _worker_id())
        candidate = space.suggest(trial)
        if not admit(trial, candidate):
            raise optuna.TrialPruned(candidate.describe_violation())
        history: list[dict[str, float]] = []

        def report(epoch: int, metrics: dict[str, float]) -> None:
            history.append({"epoch": epoch, **metrics})
            trial.set_user_attr("history", history)
            if not space.multi_objective:
                trial.report(metrics["top1"], epoch)
                if trial.should_prune():
                    trial.set_user_attr("reason", f"pruned by {space.search['pruner']} after epoch {epoch}")
                    raise optuna.TrialPruned()

        # A retried trial trains in its original's folder, so training resumes from its checkpoint.
        folder = run_dir / "trials" / f"{trial.user_attrs.get('folder', trial.number):04d}"
        try:
            result = run_trial(train_config(space, candidate, folder, device), report)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded with its reason; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        trial.set_user_attr("duration_s", result["seconds"])
        values = {"accuracy": result["top1"], "flops": candidate.flops / 1e9, "params": candidate.params / 1e6}
        return tuple(values[o] for o in space.objectives) if space.multi_objective else values["accuracy"]

    return objective


def work(space: SearchSpace, run_dir: Path, study_name: str, storage_url: str | None, n_trials: int,
         device: str | None = None, worker: int = 0,
         on_trial: Callable[[optuna.Study], None] | None = None) -> None:
    """Run trials until the study holds `n_trials` trained ones (shared by all workers)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(space, run_dir, study_name, storage_url, worker)
    objective = make_objective(space, run_dir, device)
    while True:
        active, infeasible = trained_count(study.get_trials(deepcopy=False))
        if active >= n_trials:
            return
        if infeasible > MAX_INFEASIBLE_PER_TRIAL * n_trials:
            logging.getLogger(__name__).warning(
                "stopping: the sampler proposed %d over-budget candidates; loosen the budget", infeasible)
            return
        study.optimize(objective, n_trials=1, catch=(Exception,))
        if on_trial:
            on_trial(study)


def _work_in_process(space_file: str, run_dir: str, study_name: str, storage_url: str | None, n_trials: int,
                     device: str | None, worker: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    work(load_space(space_file), Path(run_dir), study_name, storage_url, n_trials, device, worker)


def run(space: SearchSpace, space_file: Path, run_dir: Path, options: SearchOptions,
        progress: Progress | None = None) -> optuna.Study:
    """Run (or continue) the search; returns the study."""
    study_name, storage_url, n_trials, device = options.study, options.storage, options.trials, options.device
    workers = options.workers
    study = open_study(space, run_dir, study_name, storage_url)
    if not storage_url:
        recovered = recover_interrupted(study)
        if recovered and progress:
            progress.note(f"retrying interrupted trial(s) {recovered}")
    update = (lambda s: progress.update(s.get_trials(deepcopy=False))) if progress else None
    if workers <= 1:
        work(space, run_dir, study_name, storage_url, n_trials, device, on_trial=update)
        return study
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_work_in_process, args=(str(space_file), str(run_dir), study_name,
                                                                 storage_url, n_trials, device, w, threads))
                 for w in range(workers)]
    for p in processes:
        p.start()
    while any(p.is_alive() for p in processes):
        for p in processes:
            p.join(timeout=2.0)
        if update:
            update(study)
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} worker process(es) exited with status {failed}")
    return study

