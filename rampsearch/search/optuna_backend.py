"""The embedded backend: Optuna in this process (and `--workers N` processes), no server.

Each worker repeats `study.optimize(n_trials=1)` until the study holds `trials` trials that count
(rampsearch.search.study.counted_trials), so the count is shared by all workers, and neither
rejected candidates (over budget, or a duplicate of an earlier trial) nor interrupted trials use it
up. Before each count a worker mends the study (`study.mend`): trials whose process died are
marked interrupted and enqueued again, to resume from their checkpoints. A trial stopped by Ctrl-C
is marked interrupted and retried on the next run. The hand-set ramp's trial is never pruned: it is
the yardstick every other trial is judged against.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any, Callable

import optuna

from ..errors import RunFailed, UserError
from .methods import evaluate_candidate
from .options import SearchOptions
from .progress import Progress, epoch_line
from .rdb import DatabaseUnavailable
from .record import FAILED, INTERRUPTED, PRUNED, TrialRecord
from .space import SearchSpace
from .distinct import covers
from .study import (MAX_STALLED_PROPOSALS, counted_trials, duplicate_of, mend, open_study, repeat_answer,
                    stalled_proposals, worker_identity)
from .trial import admitted

# How often the parent of --workers processes refreshes its progress line.
WORKER_POLL_S = 2.0

EpochLine = Callable[[int, int, dict[str, float]], None]  # (trial number, epoch, metrics)


def make_objective(space: SearchSpace, run_dir: Path, options: SearchOptions, seed: int,
                   on_epoch: EpochLine | None = None) -> Callable[[optuna.Trial], Any]:
    score = space.score

    def objective(trial: optuna.Trial) -> Any:
        TrialRecord(worker=worker_identity(), sampler_seed=seed).write(trial)
        candidate = space.suggest(trial)
        if not admitted(candidate):
            raise optuna.TrialPruned(candidate.describe_violation())
        earlier = duplicate_of(trial.study, trial)
        if earlier is not None:  # answered with the earlier trial's score (never trained), or rejected
            answer = repeat_answer(trial.study, earlier)
            record = TrialRecord.duplicate(earlier, answered=answer is not None)
            if answer is None:
                record.write(trial)
                raise optuna.TrialPruned(record.reason)
            values, se = answer
            dataclasses.replace(record, score_se=se, method=options.method).write(trial)
            return tuple(values) if space.multi_objective else values[0]
        given = TrialRecord.of(trial)
        # A retried trial trains in its original's folder, so training resumes from its checkpoint.
        folder_number = given.folder if given.folder is not None else trial.number
        TrialRecord(folder=folder_number).write(trial)
        history = TrialRecord()

        def report(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal history
            history = history.with_epoch(epoch, metrics)
            history.write(trial)
            if on_epoch:
                on_epoch(trial.number, epoch, metrics)
            if not space.multi_objective:
                trial.report(metrics[score.metric], epoch)
                if not candidate.handset and trial.should_prune():
                    reason = f"pruned by the {space.search.pruner} pruner after epoch {epoch}/{space.proxy.epochs}"
                    TrialRecord(status=PRUNED, reason=reason).write(trial)
                    raise optuna.TrialPruned(reason)

        try:
            result = evaluate_candidate(space, candidate, run_dir, folder_number, options, report)
        except (optuna.TrialPruned, RunFailed):  # RunFailed: the study's database is gone; nothing can be written
            raise
        except KeyboardInterrupt:  # Optuna marks the trial FAIL; the record says to retry it
            TrialRecord(status=INTERRUPTED, reason="interrupted (Ctrl-C)").write(trial)
            raise
        except Exception as exc:  # recorded with its reason; the search goes on
            TrialRecord(status=FAILED, reason=f"{type(exc).__name__}: {exc}"[:2000]).write(trial)
            raise
        # the training's own per-epoch record: complete even when the trial resumed or its training
        # had finished before (a retry whose original died after training, before telling Optuna)
        final = TrialRecord(duration_s=result["seconds"], method=options.method, score_se=result.get(score.se_key))
        for row in result["history"]:
            final = final.with_epoch(row["epoch"], row)
        final.write(trial)
        values = {"accuracy": result[score.metric], "flops": candidate.flops / 1e9,
                  "params": candidate.params / 1e6}
        return tuple(values[o] for o in space.objectives) if space.multi_objective else values["accuracy"]

    return objective


def work(space: SearchSpace, run_dir: Path, options: SearchOptions, study: optuna.Study, seed: int,
         on_trial: Callable[[optuna.Study], None] | None = None, on_epoch: EpochLine | None = None) -> None:
    """Run trials until the study holds `options.trials` that count (shared by all workers); `seed`
    is the seed of the study's sampler, recorded on every trial."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's failure is in its record
    objective = make_objective(space, run_dir, options, seed, on_epoch)
    grid = space.grid()
    while True:
        mend(study)
        trials = study.get_trials(deepcopy=False)
        active, _ = counted_trials(trials)
        if active >= options.trials or (grid is not None and covers(trials, grid)):
            return  # the goal, or a complete search: every candidate the budget admits was scored
        if stalled_proposals(trials) >= MAX_STALLED_PROPOSALS:
            return  # nothing new where the sampler looks; run_search says so
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,))
        except Exception as exc:  # Optuna, unable to record the trial's end, raises its own error over ours
            unavailable = DatabaseUnavailable.behind(exc)
            if unavailable is None:
                raise
            raise unavailable from None
        if on_trial:
            on_trial(study)


def _print_epoch(trial: int, epoch: int, metrics: dict[str, float]) -> None:
    print(epoch_line(trial, epoch, metrics), file=sys.stderr, flush=True)


def _work_in_process(space: SearchSpace, run_dir: str, options: SearchOptions, worker: int, seed: int,
                     threads: int, show_epochs: bool) -> None:
    """A --workers process: the parent's space itself (as resolved: a resumed run keeps its study's score)."""
    import torch

    torch.set_num_threads(threads)
    try:
        study, seed = open_study(space, Path(run_dir), options.study, options.storage, seed)
        work(space, Path(run_dir), options, study, seed, on_epoch=_print_epoch if show_epochs else None)
    except KeyboardInterrupt:
        sys.exit(130)  # the trial is marked interrupted; the parent says so once
    except (RunFailed, UserError) as exc:  # one line, as the CLI prints it, not a traceback
        print(f"error: worker {worker}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def run(space: SearchSpace, space_file: Path, run_dir: Path, options: SearchOptions,
        progress: Progress | None = None) -> optuna.Study:
    """Run (or continue) the search; returns the study. `--workers` process w samples with seed + w."""
    study, seed = open_study(space, run_dir, options.study, options.storage)
    retried = mend(study)
    if retried and progress:
        progress.note(f"retrying interrupted trial(s) {retried}")
    update = (lambda s: progress.update(s.get_trials(deepcopy=False))) if progress else None
    if options.workers <= 1:
        work(space, run_dir, options, study, seed, on_trial=update, on_epoch=progress.epoch if progress else None)
        return study
    threads = max(1, (os.cpu_count() or 1) // options.workers)
    context = multiprocessing.get_context("spawn")
    show_epochs = bool(progress and progress.enabled)
    processes = [context.Process(target=_work_in_process, args=(space, str(run_dir), options, w, seed + w, threads,
                                                                 show_epochs))
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
        raise RunFailed(f"{len(failed)} of {options.workers} worker processes exited with status {failed} "
                        "(their error is above); rerun the same command to resume the search")
    return study
