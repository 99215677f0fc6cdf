"""The embedded backend: Optuna in this process (and `--workers N` processes), no server.

Each worker repeats `study.optimize(n_trials=1)` until the study holds `trials` trials that count
(rampsearch.search.study.counted_trials), so the count is shared by all workers, and neither
over-budget candidates (rejected before training) nor interrupted trials use it up. A trial stopped
by Ctrl-C is marked interrupted and retried on the next run, resuming from its checkpoint.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any, Callable

import optuna

from .options import SearchOptions
from .progress import Progress, epoch_line
from .record import FAILED, INTERRUPTED, PRUNED, TrialRecord
from .space import SearchSpace, load_space
from .study import (MAX_OVER_BUDGET_PER_TRIAL, counted_trials, fail_orphans, open_study, retry_interrupted,
                    worker_identity)
from .trial import admitted, candidate_spec, run_trial, train_config

# How often the parent of --workers processes refreshes its progress line.
WORKER_POLL_S = 2.0

EpochLine = Callable[[int, int, dict[str, float]], None]  # (trial number, epoch, metrics)


def make_objective(space: SearchSpace, run_dir: Path, options: SearchOptions,
                   on_epoch: EpochLine | None = None) -> Callable[[optuna.Trial], Any]:
    def objective(trial: optuna.Trial) -> Any:
        TrialRecord(worker=worker_identity()).save(trial.set_user_attr)
        candidate = space.suggest(trial)
        if not admitted(candidate):
            raise optuna.TrialPruned(candidate.describe_violation())
        given = TrialRecord.from_attrs(trial.user_attrs)
        # A retried trial trains in its original's folder, so training resumes from its checkpoint.
        folder_number = given.folder if given.folder is not None else trial.number
        TrialRecord(folder=folder_number).save(trial.set_user_attr)
        history = TrialRecord()

        def report(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal history
            history = history.with_epoch(epoch, {k: metrics[k] for k in ("top1", "top5", "loss", "train_loss")})
            history.save(trial.set_user_attr)
            if on_epoch:
                on_epoch(trial.number, epoch, metrics)
            if not space.multi_objective:
                trial.report(metrics["top1"], epoch)
                if trial.should_prune():
                    reason = f"pruned by the {space.search.pruner} pruner after epoch {epoch}/{space.proxy.epochs}"
                    TrialRecord(status=PRUNED, reason=reason).save(trial.set_user_attr)
                    raise optuna.TrialPruned(reason)

        config = train_config(space, candidate_spec(space, candidate), run_dir / "trials" / f"{folder_number:04d}",
                              options.device, overrides=None, keep_checkpoints=options.keep_checkpoints)
        try:
            result = run_trial(config, report)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:  # Optuna marks the trial FAIL; the record says to retry it
            TrialRecord(status=INTERRUPTED, reason="interrupted (Ctrl-C)").save(trial.set_user_attr)
            raise
        except Exception as exc:  # recorded with its reason; the search goes on
            TrialRecord(status=FAILED, reason=f"{type(exc).__name__}: {exc}"[:2000]).save(trial.set_user_attr)
            raise
        TrialRecord(duration_s=result["seconds"]).save(trial.set_user_attr)
        values = {"accuracy": result["top1"], "flops": candidate.flops / 1e9, "params": candidate.params / 1e6}
        return tuple(values[o] for o in space.objectives) if space.multi_objective else values["accuracy"]

    return objective


def work(space: SearchSpace, run_dir: Path, options: SearchOptions, worker: int = 0,
         on_trial: Callable[[optuna.Study], None] | None = None, on_epoch: EpochLine | None = None) -> None:
    """Run trials until the study holds `options.trials` that count (shared by all workers)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's failure is in its record
    study = open_study(space, run_dir, options.study, options.storage, worker)
    objective = make_objective(space, run_dir, options, on_epoch)
    while True:
        active, infeasible = counted_trials(study.get_trials(deepcopy=False))
        if active >= options.trials:
            return
        if infeasible > MAX_OVER_BUDGET_PER_TRIAL * options.trials:
            logging.getLogger(__name__).warning(
                "stopping: the sampler proposed %d over-budget candidates; loosen the budget", infeasible)
            return
        study.optimize(objective, n_trials=1, catch=(Exception,))
        if on_trial:
            on_trial(study)


def _print_epoch(trial: int, epoch: int, metrics: dict[str, float]) -> None:
    print(epoch_line(trial, epoch, metrics), file=sys.stderr, flush=True)


def _work_in_process(space_file: str, overrides: dict[str, Any] | None, run_dir: str, options: SearchOptions,
                     worker: int, threads: int, show_epochs: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        work(load_space(space_file, overrides), Path(run_dir), options, worker,
             on_epoch=_print_epoch if show_epochs else None)
    except KeyboardInterrupt:
        sys.exit(130)  # the trial is marked interrupted; the parent says so once


def run(space: SearchSpace, space_file: Path, run_dir: Path, options: SearchOptions,
        progress: Progress | None = None) -> optuna.Study:
    """Run (or continue) the search; returns the study."""
    study = open_study(space, run_dir, options.study, options.storage)
    if not options.storage:
        fail_orphans(study)
    retried = retry_interrupted(study)
    if retried and progress:
        progress.note(f"retrying interrupted trial(s) {retried}")
    update = (lambda s: progress.update(s.get_trials(deepcopy=False))) if progress else None
    if options.workers <= 1:
        work(space, run_dir, options, on_trial=update, on_epoch=progress.epoch if progress else None)
        return study
    threads = max(1, (os.cpu_count() or 1) // options.workers)
    context = multiprocessing.get_context("spawn")
    show_epochs = bool(progress and progress.enabled)
    processes = [context.Process(target=_work_in_process, args=(str(space_file), options.overrides, str(run_dir),
                                                                 options, w, threads, show_epochs))
                 for w in range(options.workers)]
    for p in processes:
        p.start()
    try:
        while any(p.is_alive() for p in processes):
            for p in processes:
                p.join(timeout=WORKER_POLL_S)
            if update:
                update(study)
    except KeyboardInterrupt:
        for p in processes:
            p.join()  # each worker marks its own trial interrupted and exits
        raise
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} worker process(es) exited with status {failed}")
    return study
