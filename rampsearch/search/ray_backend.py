"""The distributed backend: Ray Tune schedules proxy trainings across CPU/GPU workers and machines.

Optuna still samples (Ray's OptunaSearch, define-by-run, the same space and constraints as the
embedded backend) and every trial lives in the run directory's journal-file study, so the outputs
are the same. Tune stops trials early (ASHA) only where the embedded backend prunes: with the median
or Hyperband pruner, not with `pruner: none` nor with several objectives; and never the hand-set
ramp, the yardstick. `--gpus-per-trial 0.25` packs four trials on one GPU.
`RampOptunaSearch` fixes what OptunaSearch gets wrong for us: over-budget candidates are rejected
in `suggest` and repeats of earlier ones answered there with the earlier trial's score (recorded
with status over_budget or duplicate, never scheduled, as in the embedded backend);
ASHA-stopped trials are PRUNED, not COMPLETE full-fidelity results; errored trials are FAIL with
their error as the reason (written by `StudyCallback`, which sees the error), even if they
reported some epochs.

What is guaranteed about failures:

- After every epoch but the last, the trial hands Tune a real checkpoint: that epoch's training
  checkpoint (checkpoint.json and the two ckpt-E.*.safetensors files it names). Tune copies it
  into its storage path, `RUN_DIR/ray/STUDY/NNNN-<Tune trial id>/`, and keeps every epoch's until
  the trial ends: Tune deletes an older checkpoint before it saves the experiment state that names
  the newer one, so with only the latest kept, a driver killed in between left a restore pointing
  at a deleted checkpoint (benchmarks/faults.py hit that on its first kill). The last epoch is
  reported once training has finished (model.safetensors and result.json written), since Tune ends
  the trial as soon as it has that epoch.
- A trial that fails (an exception, a lost node) is retried up to MAX_FAILURES times, each time
  from its latest checkpoint: the retry puts Tune's checkpoint into the trial's training folder
  (`RUN_DIR/trials/NNNN`, NNNN the Optuna trial number) when that folder is missing or at another
  epoch, so training resumes after the last epoch Tune received, on any node, and reports only
  the epochs it trains: Tune's epoch counter (training_iteration), which ASHA judges by, always
  equals training's epoch.
- Multi-node: the package must be installed on every node, and Tune's storage path
  (`RUN_DIR/ray`) must be on storage every node reaches (e.g. NFS), since each worker writes its
  trial's checkpoints there (Ray refuses to persist a checkpoint from a node that cannot see it).
  The training folders need not be shared: a retry on a node without the folder restores it from
  Tune's checkpoint. The study (journal file) is written by the driver only.
- When a trial ends (completed, stopped by ASHA, or failed MAX_FAILURES + 1 times), its checkpoint
  in Tune's storage is deleted unless `--keep-checkpoints`, as training deletes its own when it
  completes. A failed trial stays failed: resuming the search does not run it again.
- A stopped driver (Ctrl-C, or killed) loses nothing that Tune saved: Tune saves its experiment
  (its trials, their checkpoints, and this searcher with its Optuna trials and sampler) after every
  trial checkpoint and otherwise every ten seconds or so, and rerunning the command restores it
  (Tuner.restore). Ctrl-C leaves the unfinished Optuna trials RUNNING, with a reason saying the
  rerun resumes them, and `run` raises KeyboardInterrupt. The rerun resumes each in its own Optuna
  trial from its last checkpoint, so its epochs are recorded once and it counts once towards
  --trials; a completed trial is never trained or written again. A trial that Tune's last saved
  state does not know (suggested after it, then killed: no epoch of it had reached Tune) is marked
  interrupted, does not count, and is retried from its first epoch.
- Limits of a restore: rerunning with a different --trials does not change the experiment's
  number of trials, and ASHA's rungs start empty (Tune does not save its scheduler), so ASHA
  judges the resumed and later trials only against the results reported since.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.exceptions import AuthenticationError
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ..architecture import Architecture
from ..checkpoint import POINTER, RESULT, drop_checkpoint, read_json
from ..errors import UserError
from ..ramp import RampSchedule
from .options import SearchOptions
from .progress import Progress
from .record import FAILED, INTERRUPTED, ONE_SHOT, PRUNED, TRAIN, TrialRecord
from .space import SearchSpace
from .distinct import covers
from .study import (MAX_STALLED_PROPOSALS, counted_trials, duplicate_of, fail_trial, make_pruner, make_sampler,
                    open_storage, open_study, repeat_answer, retry_interrupted, trial_by_number)
from .trial import admitted, evaluate_candidate, trial_folder

# What Tune reports for each objective, and its mode; `accuracy` is the searched score (search.score).
METRICS = {"flops": ("gflops", "min"), "params": ("mparams", "min")}


def _metric(space: SearchSpace, objective: str) -> tuple[str, str]:
    return (space.score.metric, space.score.mode) if objective == "accuracy" else METRICS[objective]


# ASHA judges trials at GRACE * REDUCTION^k epochs (1, 3, 9, ...) and keeps the best 1/REDUCTION
# at each. A proxy training lasts only a few epochs (3 by default), so the first judgement comes
# after epoch 1, or there is little left to save; a third is what Optuna's HyperbandPruner keeps,
# so the two backends prune alike.
ASHA_GRACE_EPOCHS = 1
ASHA_REDUCTION_FACTOR = 3
# Tune retries a failed trial (an exception, a lost node) this often, each time from its latest
# checkpoint: enough for a node lost twice, while a trial that fails every time (a bug, a candidate
# too big for the GPU) costs only three short starts.
MAX_FAILURES = 2
# A reachable Ray head accepts a TCP connection in milliseconds; ray.init would retry for minutes.
CONNECT_TIMEOUT_S = 5.0
# Tune's defaults that a search changes (unless set in the environment). Tune saves its experiment
# state (what a rerun restores) every 10 s or more by default; a search saves it at every step of
# Tune's loop, so a killed driver's rerun resumes every trial from its newest checkpoint (the state
# is a few KB per trial). Tune warns whenever one save follows another within 5 s, as they then
# always do: only noise.
TUNE_DEFAULTS = {"TUNE_GLOBAL_CHECKPOINT_S": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}

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


# -- Ray's authentication internals ---------------------------------------------------------------
# A driver must use token authentication exactly when its cluster does: with a token against a
# cluster without authentication, the driver demands tokens that the cluster's workers never send,
# so every trial dies within seconds; without one against a cluster that requires it, nothing
# connects. Ray 2.60 has no public way to ask a cluster which it is, and reads RAY_AUTH_MODE only
# when imported. The probe script and `_use_auth_mode` are the only code that touches `ray._raylet`;
# tests/test_faults_ray.py runs them against real clusters with and without token authentication.

# Exit statuses of _AUTH_PROBE.
CLUSTER_OPEN, TOKEN_ACCEPTED, TOKEN_REJECTED, NO_TOKEN = 0, 3, 4, 5
# Asks the cluster's GCS at argv[1] for its id, first without a token, then with this machine's
# (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). A process of its own, since Ray's
# auth mode is process-wide and its client logs every refusal to stderr.
_AUTH_PROBE = f"""
import os, sys
from ray._raylet import AuthenticationTokenLoader, Config, GcsClient
from ray.exceptions import AuthenticationError

def answers():
    try:
        GcsClient(address=sys.argv[1])
    except AuthenticationError:
        return False
    return True

if answers():
    sys.exit({CLUSTER_OPEN})
if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
    sys.exit({NO_TOKEN})
os.environ["RAY_AUTH_MODE"] = "token"
Config.initialize("")
sys.exit({TOKEN_ACCEPTED} if answers() else {TOKEN_REJECTED})
"""
# The probe spends about a second importing Ray, and a cluster's GCS answers in milliseconds.
# Something else listening at the address never answers (Ray's client gives up after 40 s); then
# the probe is abandoned and ray.init's own error says what is wrong.
AUTH_PROBE_TIMEOUT_S = 20.0


def _probe_auth(address: str) -> int | None:
    """How the cluster at HOST:PORT `address` authenticates this machine (an exit status of _AUTH_PROBE), or None."""
    try:
        probe = subprocess.run([sys.executable, "-c", _AUTH_PROBE, address], capture_output=True,
                               env={**os.environ, "RAY_AUTH_MODE": "disabled"}, timeout=AUTH_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    known = (CLUSTER_OPEN, TOKEN_ACCEPTED, TOKEN_REJECTED, NO_TOKEN)
    return probe.returncode if probe.returncode in known else None


def _use_auth_mode(mode: str) -> None:
    """From the next ray.init on, this process's Ray (and the processes it starts) use auth mode `mode`:
    "token" or "disabled"."""
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")  # Ray rereads its environment, as it does itself when it turns token mode on


# -- the driver's objects in Tune's experiment ----------------------------------------------------
# Tune pickles the searcher and the callbacks into the experiment (tuner.pkl) when the Tuner is
# created, and Tuner.restore unpickles them. Ours hold this driver's live objects (the study, the
# progress bar, which on a terminal cannot be unpickled), so they pickle as references to the
# objects of whichever driver restores them: run() registers its own first. Tune then loads the
# searcher state it saved into the rerun's searcher (RampOptunaSearch.restore).
_DRIVER: dict[str, Any] = {}


def _of_this_driver(role: str) -> Any:
    """This driver's object in `role`: "searcher" or "callback"."""
    return _DRIVER[role]


# -- sampling ---------------------------------------------------------------------------------------

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

    def __init__(self, *args: Any, max_epochs: int, sampler_seed: int, method: str = TRAIN, score_se_key: str = "",
                 grid: list | None = None, **kwargs: Any) -> None:
        """`score_se_key`: the result key of the searched score's standard error; `grid`: the space's
        candidates when it can list them (SearchSpace.grid), to stop when every one has been scored."""
        self.max_epochs, self.sampler_seed, self.method = max_epochs, sampler_seed, method
        self.score_se_key, self.grid = score_se_key, grid
        super().__init__(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _of_this_driver, ("searcher",)  # see "the driver's objects in Tune's experiment"

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


# -- the trainable ----------------------------------------------------------------------------------

def _copy_checkpoint(source: Path, dest: Path) -> None:
    """Copy the current training checkpoint of `source` (checkpoint.json and the files it names) to `dest`.

    Files are hard-linked where both sides share a filesystem (the training code never rewrites a
    file in place), else copied; checkpoint.json goes last, so `dest` never names missing files.
    """
    pointer = read_json(source / POINTER, "checkpoint")
    dest.mkdir(parents=True, exist_ok=True)
    for name in (pointer["model"], pointer["tensors"], POINTER):
        (dest / name).unlink(missing_ok=True)
        try:
            os.link(source / name, dest / name)
        except OSError:
            shutil.copyfile(source / name, dest / name)


def _trained_epochs(folder: Path) -> int:
    """How far the training in `folder` is: its result's epochs, its checkpoint's epoch, or 0."""
    if (folder / RESULT).is_file():
        return read_json(folder / RESULT, "training result")["epochs"]
    if (folder / POINTER).is_file():
        return read_json(folder / POINTER, "checkpoint")["epoch"]
    return 0


def _align_with_tune(folder: Path) -> None:
    """Make `folder`'s training resume after the last epoch Tune received.

    Tune restarts a retried trial's epoch count from its latest checkpoint, while training resumes
    from the folder's. They differ when the folder is missing (a retry on another node) or holds
    an epoch Tune never received (a failure between writing the checkpoint and reporting it). The
    folder then takes Tune's checkpoint (or none), so training calls on_epoch exactly for the
    epochs Tune has not seen (at most one epoch is trained again).
    """
    checkpoint = tune.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as directory:
        epoch = read_json(Path(directory) / POINTER, "checkpoint")["epoch"] if directory else 0
        if _trained_epochs(folder) != epoch:
            drop_checkpoint(folder)
            (folder / RESULT).unlink(missing_ok=True)
            if directory:
                _copy_checkpoint(Path(directory), folder)


@contextlib.contextmanager
def _staged_checkpoint(folder: Path) -> Iterator[tune.Checkpoint]:
    """The folder's current training checkpoint as a Tune checkpoint of its own directory.

    Tune copies a reported checkpoint's directory into its storage, so it gets a temporary
    directory (beside the folder, so that its files are hard links) holding only this epoch's files.
    """
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-tune-") as staging:
        _copy_checkpoint(folder, Path(staging))
        yield tune.Checkpoint.from_directory(staging)


def _trainable(config: dict[str, Any], space: SearchSpace, run_dir: str, options: SearchOptions, threads: int,
               finished: frozenset[int]) -> None:
    """Train one trial, reporting each epoch to Tune with its checkpoint, the last once training is done
    (one-shot: score it on the shared supernet and report that once).

    Tune ends a trial as soon as it has its last epoch (ASHA stops it at max_t), so that epoch is
    reported only after training has written its result and dropped its checkpoint; a finished
    trial needs no checkpoint. If the trial dies in between, its retry trains that epoch again.
    `finished`: the Optuna trials already finished when the driver started. Tune resumes one of
    them when it finished after Tune last saved its experiment; it is not trained (nor its files
    written) again.
    """
    if config["number"] in finished:
        return
    import torch

    torch.set_num_threads(threads)
    arch = Architecture.from_dict(config["architecture"])
    candidate = space.candidate(arch, RampSchedule(tuple(config["ramp"])), handset=config["handset"])
    folder = trial_folder(Path(run_dir), config["number"])
    _align_with_tune(folder)
    constants = {"gflops": candidate.flops / 1e9, "mparams": candidate.params / 1e6}
    last: dict[str, float] = {}
    if options.method == ONE_SHOT:  # the supernet's folder is on a disk every worker reads
        result = evaluate_candidate(space, candidate, Path(run_dir), config["number"], options, report=None)
        tune.report({**result["history"][-1], **constants})
        return

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == space.proxy.epochs:
            last.update(metrics, **constants, epoch=epoch)
            return
        with _staged_checkpoint(folder) as checkpoint:
            tune.report({**metrics, **constants, "epoch": epoch}, checkpoint=checkpoint)

    evaluate_candidate(space, candidate, Path(run_dir), config["number"], options, report)
    if last:  # empty when Tune had the last epoch already (training returned its stored result)
        tune.report(last)


# -- the driver -------------------------------------------------------------------------------------

def _error_summary(trial: Trial) -> str:
    """The last line of a failed Tune trial's error (e.g. "RuntimeError: CUDA out of memory"), and where the rest is."""
    text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown error"
    return f"{last[:1500]} (failed {text.count('Failure # ')} times; Tune's error log: {trial.path}/error.txt)"


def _trial_dirname(trial: Trial) -> str:
    """Tune's folder of a trial, named like its training folder: NNNN-<Tune trial id>."""
    return f"{trial.config['number']:04d}-{trial.trial_id}"


class StudyCallback(tune.Callback):
    """The driver's view of trials as Tune runs them: progress lines, failures, checkpoint cleanup."""

    def __init__(self, study: optuna.Study, progress: Progress | None, keep_checkpoints: bool) -> None:
        self.study, self.progress, self.keep_checkpoints = study, progress, keep_checkpoints

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _of_this_driver, ("callback",)  # see "the driver's objects in Tune's experiment"

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


def _scheduler(space: SearchSpace, method: str = TRAIN) -> TrialScheduler:
    """Tune stops trials early only where the embedded backend prunes: ASHA for the median and
    Hyperband pruners; nothing for `pruner: none`, several objectives (Optuna cannot prune those) or
    one-shot scoring (one step)."""
    if isinstance(make_pruner(space), optuna.pruners.NopPruner) or method == ONE_SHOT:
        return FIFOScheduler()
    return HandsetSparingASHA(time_attr="training_iteration", metric=space.score.metric, mode=space.score.mode,
                              max_t=space.proxy.epochs,
                              grace_period=ASHA_GRACE_EPOCHS, reduction_factor=ASHA_REDUCTION_FACTOR)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT or ray://HOST:PORT address; None for 'auto' (Ray's to find)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if sep and port.isdigit() else None


def _check_reachable(address: str, host_port: tuple[str, int]) -> None:
    """Fail fast, naming the address, when nothing listens there."""
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}). Start one "
                        "on that machine with `ray start --head`, or pass --address auto on a node of a running "
                        "cluster") from None


def _match_cluster_auth(address: str) -> None:
    """Use token authentication exactly when the cluster at HOST:PORT `address` does, or say why it cannot be joined.

    A token left in ~/.ray/auth_token by an earlier `ray start` says nothing about this cluster.
    """
    status = _probe_auth(address)
    if status == NO_TOKEN:
        raise UserError(f"--address {address}: that Ray cluster requires token authentication and this machine has "
                        "no token; put the cluster's token (`ray get-auth-token` on its head node) in "
                        "~/.ray/auth_token or RAY_AUTH_TOKEN")
    if status == TOKEN_REJECTED:
        raise UserError(f"--address {address}: that Ray cluster rejects this machine's auth token (from "
                        "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); use the cluster's own, which "
                        "`ray get-auth-token` prints on its head node")
    if status is not None:
        _use_auth_mode("token" if status == TOKEN_ACCEPTED else "disabled")


def _connect(address: str) -> None:
    """Join a running cluster, or say clearly why not."""
    host_port = _host_port(address)
    if host_port:
        _check_reachable(address, host_port)
        if not address.startswith("ray://"):  # Ray Client answers on its own port, not the GCS's
            _match_cluster_auth(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, AuthenticationError) as exc:
        raise UserError(f"--address {address}: could not join a Ray cluster there ({exc}). Start one with "
                        "`ray start --head`, or pass 'auto' on a cluster node; with 'auto', a cluster with token "
                        "authentication needs its token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None


def _check_options(options: SearchOptions) -> None:
    if options.storage:
        raise UserError("--storage is for the optuna backend; with --backend ray, Ray's cluster shares the work "
                        "and the study lives in the run directory")
    if options.device.startswith("cuda") and options.gpus_per_trial <= 0:
        raise UserError(f"--device {options.device} needs --gpus-per-trial > 0 with --backend ray: Ray hides "
                        "the GPUs from trials that reserve none")


def _searcher(space: SearchSpace, run_dir: Path, options: SearchOptions, seed: int) -> RampOptunaSearch:
    metric, mode = zip(*(_metric(space, o) for o in space.objectives))
    return RampOptunaSearch(
        space=DefineByRun(space), metric=list(metric) if space.multi_objective else metric[0],
        mode=list(mode) if space.multi_objective else mode[0], sampler=make_sampler(space, seed),
        study_name=options.study, storage=open_storage(run_dir, None),
        max_epochs=1 if options.method == ONE_SHOT else space.proxy.epochs, sampler_seed=seed, method=options.method,
        score_se_key=space.score.se_key, grid=space.grid())


def _new_tuner(study: optuna.Study, space: SearchSpace, run_dir: Path, options: SearchOptions, trainable: Any,
               searcher: RampOptunaSearch, callback: StudyCallback, progress: Progress | None) -> tune.Tuner | None:
    """A Tune experiment for the trials the study still needs, or None if it has them all.

    Its trials left RUNNING, by a driver stopped before Tune first saved the experiment (or whose
    experiment was deleted), can be resumed by no one: they are marked interrupted and retried.
    """
    experiment = run_dir / "ray" / options.study
    if experiment.exists():
        shutil.rmtree(experiment)  # an experiment that never wrote its state: nothing to resume
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        fail_trial(study, trial, TrialRecord(status=INTERRUPTED, reason=NOT_IN_EXPERIMENT))
    retried = retry_interrupted(study)
    if retried and progress:
        progress.note(f"retrying interrupted trial(s) {retried}")
    missing = options.trials - counted_trials(study.get_trials(deepcopy=False))[0]
    if missing <= 0:
        return None
    return tune.Tuner(
        trainable,
        # one-shot: a worker keeps its loaded supernet and scoring images for its next candidates
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=_scheduler(space, options.method),
                                    num_samples=missing, reuse_actors=options.method == ONE_SHOT,
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=options.study, storage_path=str(run_dir / "ray"), verbose=0,
                                  callbacks=[callback], checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                                  failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)))


def run(space: SearchSpace, space_file: Path, run_dir: Path, options: SearchOptions,
        progress: Progress | None = None) -> optuna.Study:
    """Run (or resume) a Ray Tune search; returns the Optuna study that holds its trials.

    Raises KeyboardInterrupt when Tune stopped on Ctrl-C: it saved its experiment first, and the
    trials it left unfinished stay RUNNING until a rerun of the same command resumes them.
    """
    _check_options(options)
    run_dir = run_dir.resolve()
    joined_here = not ray.is_initialized()  # a Ray this process already runs is used as it is
    if joined_here and options.address:
        _connect(options.address)
    elif joined_here:
        # A one-machine cluster. It stays on loopback only if RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was
        # set before Ray was imported; otherwise Ray (on Linux) swaps 127.0.0.1 for this machine's address.
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        # Created (with the hand-set ramp enqueued) before OptunaSearch loads it, so the driver reads
        # progress from the start and the hand-set ramp is the first trial.
        study, seed = open_study(space, run_dir, options.study, None)
        finished = frozenset(t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished())
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, space=space, run_dir=str(run_dir), options=options,
                                 threads=max(1, int(options.cpus_per_trial)), finished=finished),
            {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
        searcher = _searcher(space, run_dir, options, seed)
        callback = StudyCallback(study, progress, options.keep_checkpoints)
        _DRIVER.update(searcher=searcher, callback=callback)
        experiment = run_dir / "ray" / options.study
        if tune.Tuner.can_restore(str(experiment)):
            # Failed trials are final (their record says why); unfinished ones resume from their checkpoints.
            if progress:
                progress.note(f"resuming the Ray Tune experiment in {experiment}")
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True)
        else:
            tuner = _new_tuner(study, space, run_dir, options, trainable, searcher, callback, progress)
        if tuner is not None:
            for name, value in TUNE_DEFAULTS.items():
                os.environ.setdefault(name, value)
            with contextlib.redirect_stdout(sys.stderr):  # Tune prints tables to stdout; --json owns stdout
                tuner.fit()
    finally:
        _DRIVER.clear()
        if joined_here:
            ray.shutdown()
    # Tune ends early only when stopped (Ctrl-C), after saving its experiment with this searcher's
    # unfinished trials, which the rerun resumes; a normal end leaves none.
    stopped = searcher.settle_running(STOPPED)
    if stopped:
        raise KeyboardInterrupt(f"Ray Tune stopped before trial(s) {stopped} finished")
    return study
