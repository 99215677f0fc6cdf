"""The Optuna searcher inside Tune: Ray's OptunaSearch, fixed for our records (rampsearch.search.ray_backend).

`RampOptunaSearch` rejects over-budget candidates in `suggest` and answers repeats of earlier ones
there with the earlier trial's score (recorded with status over_budget or duplicate, never
scheduled, as in the embedded backend); ASHA-stopped trials are PRUNED, not COMPLETE full-fidelity
results; errored trials are left to `StudyCallback` (rampsearch.search.ray_backend.tuning), which
fails them with their error as the reason.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ..distinct import covers
from ..record import DEFAULT_METHOD, INTERRUPTED, PRUNED, TrialRecord
from ..space import SearchSpace
from ..study import MAX_STALLED_PROPOSALS, duplicate_of, fail_trial, repeat_answer, retry_interrupted, trial_by_number
from ..trial import admitted
from .pickled import of_this_driver

# What a trial's record says when a stopped search left it unfinished (written on its Optuna trial).
STOPPED = ("the search stopped before this trial finished; rerunning the same command resumes it from its "
           "last checkpoint")
RESUMED = "resumed from its last checkpoint by a rerun after the search stopped"
NOT_IN_EXPERIMENT = ("interrupted (the search stopped before Ray Tune saved this trial in its experiment, "
                     "so Tune cannot resume it)")


# -- Ray's OptunaSearch internals -------------------------------------------------------------------
# OptunaSearch has no public way to reach the Optuna trial behind a Tune trial, to tell Optuna about
# a trial Tune never scheduled, or to mark a Tune trial as done. These functions are the only code
# that touches its private members (`_ot_study`, `_ot_trials`, `_completed_trials`);
# tests/test_ray_backend.py pins them to the installed Ray, so an upgrade fails there first.

def _optuna_trial(searcher: OptunaSearch, trial_id: str) -> optuna.Trial | None:
    """The Optuna trial behind Tune trial `trial_id`, or None if this searcher never suggested it."""
    return searcher._ot_trials.get(trial_id)


def _optuna_study(searcher: OptunaSearch) -> optuna.Study:
    return searcher._ot_study


def _reject(searcher: OptunaSearch, trial_id: str) -> None:
    """Finish the Optuna trial of `trial_id` as PRUNED and unlink it, so the Tune trial gets a new one."""
    searcher._ot_study.tell(searcher._ot_trials.pop(trial_id), state=TrialState.PRUNED)


def _answer(searcher: OptunaSearch, trial_id: str, values: list[float]) -> None:
    """Finish the Optuna trial of `trial_id` as COMPLETE with `values` (a duplicate answered with an earlier
    trial's score) and unlink it, so the Tune trial gets a new one."""
    searcher._ot_study.tell(searcher._ot_trials.pop(trial_id), values)


def _finish(searcher: OptunaSearch, trial_id: str, state: TrialState) -> None:
    """Finish the Optuna trial of `trial_id` in `state` (no values); the Tune trial is done."""
    searcher._ot_study.tell(searcher._ot_trials[trial_id], state=state)
    _mark_done(searcher, trial_id)


def _is_done(searcher: OptunaSearch, trial_id: str) -> bool:
    return trial_id in searcher._completed_trials


def _mark_done(searcher: OptunaSearch, trial_id: str) -> None:
    """Make OptunaSearch ignore any later result or completion of `trial_id`."""
    searcher._completed_trials.add(trial_id)


def _unfinished(searcher: OptunaSearch) -> list[optuna.Trial]:
    """The Optuna trials of the Tune trials this searcher suggested and has not seen end."""
    return [t for trial_id, t in searcher._ot_trials.items() if trial_id not in searcher._completed_trials]


class DefineByRun:
    """The space as Ray's OptunaSearch wants it: a picklable define-by-run callable.

    `space.suggest` writes the candidate's record (an over-budget one with status over_budget) and
    its budget constraints on the trial; the returned config is what the trainable needs.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        candidate = self.space.suggest(trial)
        return {"architecture": candidate.arch.to_dict(), "ramp": list(candidate.ramp.ratios),
                "handset": candidate.handset, "admitted": admitted(candidate),
                "gflops": candidate.flops / 1e9, "mparams": candidate.params / 1e6}


class RampOptunaSearch(OptunaSearch):
    """OptunaSearch that rejects over-budget and duplicate candidates and tells Optuna the truth about early stops.

    A scheduled trial's config gains `number`, its Optuna trial number, which names its training
    folder. Errored trials are left RUNNING in Optuna here: `StudyCallback.on_trial_error`, which
    Tune calls right after, fails them with the error as the reason.
    """

    def __init__(self, *args: Any, max_epochs: int, sampler_seed: int, method: str = DEFAULT_METHOD, score_se_key: str = "",
                 grid: list | None = None, **kwargs: Any) -> None:
        """`score_se_key`: the result key of the searched score's standard error; `grid`: the space's
        candidates when it can list them (SearchSpace.grid), to stop when every one has been scored."""
        self.max_epochs, self.sampler_seed, self.method = max_epochs, sampler_seed, method
        self.score_se_key, self.grid = score_se_key, grid
        super().__init__(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return of_this_driver, ("searcher",)  # rampsearch.search.ray_backend.pickled says why

    def restore(self, checkpoint_path: str) -> None:
        """Load the state Tune saved with its experiment, then settle the study's RUNNING trials.

        Tune saved this searcher (its Optuna trials and sampler) together with its own trials, so
        the Tune trials it resumes are exactly this searcher's unfinished ones. A trial suggested
        after that save is marked interrupted and retried: no epoch of it reached Tune (Tune saves
        right after each checkpoint it receives), so it trains from the start, and its candidate
        trains once (the restored sampler proposes it again, a duplicate of the retry).
        """
        super().restore(checkpoint_path)
        self.settle_running(RESUMED)
        retry_interrupted(_optuna_study(self))

    def settle_running(self, reason: str) -> list[int]:
        """Write `reason` on the study's RUNNING trials that this searcher's Tune trials will finish,
        and mark every other RUNNING trial interrupted, since nothing would ever finish it (a trial
        suggested after Tune's last save, by a driver that was then killed). Returns the former's numbers.
        """
        study = _optuna_study(self)
        finishable = {t.number: t for t in _unfinished(self)}
        kept = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in finishable:
                TrialRecord(reason=reason).write(finishable[trial.number])
                kept.append(trial.number)
            else:
                fail_trial(study, trial, TrialRecord(status=INTERRUPTED, reason=NOT_IN_EXPERIMENT))
        return kept

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        """A new candidate for Tune trial `trial_id`; FINISHED once every candidate of a listable space was
        scored, or after MAX_STALLED_PROPOSALS in a row brought nothing new (run_search says which)."""
        study = _optuna_study(self)
        if self.grid is not None and covers(study.get_trials(deepcopy=False), self.grid):
            return Searcher.FINISHED
        for _ in range(MAX_STALLED_PROPOSALS):
            config = super().suggest(trial_id)
            ot_trial = _optuna_trial(self, trial_id)
            if not config["admitted"]:  # its record says over_budget
                _reject(self, trial_id)
                continue
            earlier = duplicate_of(study, ot_trial)
            if earlier is None:
                TrialRecord(folder=ot_trial.number, ray_trial_id=trial_id, sampler_seed=self.sampler_seed,
                            method=self.method).write(ot_trial)
                return {**config, "number": ot_trial.number}
            answer = repeat_answer(study, earlier)
            record = TrialRecord.duplicate(earlier, answered=answer is not None)
            if answer is None:
                record.write(ot_trial)
                _reject(self, trial_id)
            else:
                dataclasses.replace(record, score_se=answer[1], method=self.method).write(ot_trial)
                _answer(self, trial_id, answer[0])
        return Searcher.FINISHED

    def _open(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial of `trial_id` if it may still be written, else None.

        After Tuner.restore, Tune may rerun trials from a searcher state older than the study, and
        a finished Optuna trial cannot be written again.
        """
        ot_trial = _optuna_trial(self, trial_id)
        if ot_trial is None or _is_done(self, trial_id):
            return None
        if trial_by_number(_optuna_study(self), ot_trial.number).state.is_finished():
            _mark_done(self, trial_id)
            return None
        return ot_trial

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        ot_trial = self._open(trial_id)
        if ot_trial is not None:
            _record_epoch(ot_trial, result)
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._open(trial_id)
        if ot_trial is None:
            return
        if error:
            _mark_done(self, trial_id)  # StudyCallback.on_trial_error fails it, with the error
            return
        if result:  # Tune hands a trial's last result to on_trial_complete only
            _record_epoch(ot_trial, result)
            TrialRecord(duration_s=result["time_total_s"], score_se=result.get(self.score_se_key)).write(ot_trial)
        epochs = (result or {}).get("epoch", 0)
        if epochs < self.max_epochs:
            reason = f"stopped by ASHA after epoch {epochs}/{self.max_epochs}"
            TrialRecord(status=PRUNED, reason=reason).write(ot_trial)
            _finish(self, trial_id, TrialState.PRUNED)
            return
        super().on_trial_complete(trial_id, result, error)


def _record_epoch(ot_trial: optuna.Trial, result: dict) -> None:
    TrialRecord(history=TrialRecord.of(ot_trial).history).with_epoch(result["epoch"], result).write(ot_trial)
