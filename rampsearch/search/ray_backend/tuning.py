"""What the driver plugs into Tune: the callback that watches trials, and the scheduler that stops them early."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from .. import methods
from ..progress import Progress
from ..record import FAILED, TrialRecord
from ..space import SearchSpace
from ..study import fail_trial, make_pruner, trial_by_number
from .pickled import of_this_driver

# ASHA judges trials at GRACE * REDUCTION^k epochs (1, 3, 9, ...) and keeps the best 1/REDUCTION
# at each. A proxy training lasts only a few epochs (3 by default), so the first judgement comes
# after epoch 1, or there is little left to save; a third is what Optuna's HyperbandPruner keeps,
# so the two backends prune alike.
ASHA_GRACE_EPOCHS = 1
ASHA_REDUCTION_FACTOR = 3


def _error_summary(trial: Trial) -> str:
    """The last line of a failed Tune trial's error (e.g. "RuntimeError: CUDA out of memory"), and where the rest is."""
    text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown error"
    return f"{last[:1500]} (failed {text.count('Failure # ')} times; Tune's error log: {trial.path}/error.txt)"


def trial_dirname(trial: Trial) -> str:
    """Tune's folder of a trial, named like its training folder: NNNN-<Tune trial id>."""
    return f"{trial.config['number']:04d}-{trial.trial_id}"


class StudyCallback(tune.Callback):
    """The driver's view of trials as Tune runs them: progress lines, failures, checkpoint cleanup."""

    def __init__(self, study: optuna.Study, progress: Progress | None, keep_checkpoints: bool) -> None:
        self.study, self.progress, self.keep_checkpoints = study, progress, keep_checkpoints

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return of_this_driver, ("callback",)  # rampsearch.search.ray_backend.pickled says why

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.progress:
            self.progress.epoch(trial.config["number"], result["epoch"], result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        ot_trial = trial_by_number(self.study, trial.config["number"])
        if ot_trial.state == TrialState.RUNNING:
            fail_trial(self.study, ot_trial, TrialRecord(status=FAILED, reason=_error_summary(trial)))
        self._ended(trial)

    def _ended(self, trial: Trial) -> None:
        """Drop the ended trial's checkpoints from Tune's storage (training drops its own), show progress."""
        if not self.keep_checkpoints and trial.path:
            for checkpoint in Path(trial.path).glob("checkpoint_*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
        if self.progress:
            self.progress.update(self.study.get_trials(deepcopy=False))


class HandsetSparingASHA(ASHAScheduler):
    """ASHA that never stops the hand-set ramp's trial, the yardstick every schedule is judged against.

    Its results still enter ASHA's rungs, so the other trials are measured against it.
    """

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        return TrialScheduler.CONTINUE if trial.config["handset"] else decision


def make_scheduler(space: SearchSpace, method: str | None = None) -> TrialScheduler:
    """Tune stops trials early only where the embedded backend prunes: ASHA for the median and
    Hyperband pruners; nothing for `pruner: none`, several objectives (Optuna cannot prune those) or
    a method that reports no epochs (one-shot scoring: one step). `method`: its name; None: the space's."""
    scoring = methods.get(method or space.method)
    if isinstance(make_pruner(space), optuna.pruners.NopPruner) or not scoring.per_epoch:
        return FIFOScheduler()
    return HandsetSparingASHA(time_attr="training_iteration", metric=space.score.metric, mode=space.score.mode,
                              max_t=scoring.epochs(space),
                              grace_period=ASHA_GRACE_EPOCHS, reduction_factor=ASHA_REDUCTION_FACTOR)
