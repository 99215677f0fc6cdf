"""The distributed backend: Ray Tune schedules proxy trainings across CPU/GPU workers and machines.

Optuna still samples (Ray's OptunaSearch, define-by-run, the same space and constraints as the
embedded backend) and every trial lives in the run directory's journal-file study, so the outputs
are the same. ASHA stops weak trials early; `--gpus-per-trial 0.25` packs four trials on one GPU.
`RampOptunaSearch` fixes what OptunaSearch gets wrong for us: over-budget candidates are rejected
in `suggest` (recorded with status over_budget, never scheduled, as in the embedded backend);
ASHA-stopped trials are PRUNED, not COMPLETE full-fidelity results; errored trials are FAIL with
their error as the reason (written by `StudyCallback`, which sees the error), even if they
reported some epochs.

What is guaranteed about failures:

- After every epoch but the last, the trial hands Tune a real checkpoint: that epoch's training
  checkpoint (checkpoint.json and the two ckpt-E.*.safetensors files it names). Tune copies it
  into its storage path, `RUN_DIR/ray/STUDY/NNNN-<Tune trial id>/`, keeping the latest one per
  trial. The last epoch is reported once training has finished (model.safetensors and
  result.json written), since Tune ends the trial as soon as it has that epoch.
- A trial that fails (an exception, a lost node) is retried up to MAX_FAILURES times, each time
  from its latest checkpoint: the retry puts Tune's checkpoint into the trial's training folder
  (`RUN_DIR/trials/NNNN`, NNNN the Optuna trial number) when that folder is missing or at another
  epoch, so training resumes after the last epoch Tune received, on any node, and reports only
  the epochs it trains: Tune's epoch counter (training_iteration) always equals training's epoch.
- Multi-node: the package must be installed on every node, and Tune's storage path
  (`RUN_DIR/ray`) must be on storage every node reaches (e.g. NFS), since each worker writes its
  trial's checkpoints there (Ray refuses to persist a checkpoint from a node that cannot see it).
  The training folders need not be shared: a retry on a node without the folder restores it from
  Tune's checkpoint. The study (journal file) is written by the driver only.
- When a trial ends (completed, stopped by ASHA, or failed MAX_FAILURES + 1 times), its checkpoint
  in Tune's storage is deleted unless `--keep-checkpoints`, as training deletes its own when it
  completes. A failed trial stays failed: resuming the search does not run it again.
- Not yet: a search stopped with Ctrl-C marks its running trials interrupted; resuming it lets
  Tune continue them from their checkpoints, but their results are no longer recorded (the
  embedded backend retries such trials instead).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.trial import TrialState


def _use_cluster_token() -> None:
    """Send the cluster's auth token when this machine has one (`ray start` writes ~/.ray/auth_token).

    Ray means to do this itself but skips it when joining an explicit address, and it reads
    RAY_AUTH_MODE when imported, so this runs before `import ray`.
    """
    token = Path.home() / ".ray" / "auth_token"
    if "RAY_AUTH_MODE" not in os.environ and "RAY_AUTH_TOKEN" not in os.environ and token.exists():
        os.environ["RAY_AUTH_MODE"] = "token"


_use_cluster_token()
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from ..architecture import Architecture  # noqa: E402
from ..checkpoint import POINTER, drop_checkpoint, read_json  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..ramp import RampSchedule  # noqa: E402
from .options import SearchOptions  # noqa: E402
from .progress import Progress  # noqa: E402
from .record import FAILED, INTERRUPTED, PRUNED, TrialRecord  # noqa: E402
from .space import SearchSpace  # noqa: E402
from .study import (MAX_OVER_BUDGET_PER_TRIAL, fail_trial, make_sampler, open_storage, open_study,  # noqa: E402
                    trial_by_number)
from .trial import admitted, candidate_spec, run_trial, train_config  # noqa: E402

METRICS = {"accuracy": ("top1", "max"), "flops": ("gflops", "min"), "params": ("mparams", "min")}
HISTORY_METRICS = ("top1", "top5", "loss", "train_loss")  # per epoch, as the embedded backend records them

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


def _finish(searcher: OptunaSearch, trial_id: str, state: TrialState) -> None:
    """Finish the Optuna trial of `trial_id` in `state` (no values); the Tune trial is done."""
    searcher._ot_study.tell(searcher._ot_trials[trial_id], state=state)
    _mark_done(searcher, trial_id)


def _is_done(searcher: OptunaSearch, trial_id: str) -> bool:
    return trial_id in searcher._completed_trials


def _mark_done(searcher: OptunaSearch, trial_id: str) -> None:
    """Make OptunaSearch ignore any later result or completion of `trial_id`."""
    searcher._completed_trials.add(trial_id)


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
    """OptunaSearch that rejects over-budget candidates and tells Optuna the truth about early stops.

    A scheduled trial's config gains `number`, its Optuna trial number, which names its training
    folder. Errored trials are left RUNNING in Optuna here: `StudyCallback.on_trial_error`, which
    Tune calls right after, fails them with the error as the reason.
    """

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        self.max_epochs = max_epochs
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        for _ in range(MAX_OVER_BUDGET_PER_TRIAL):
            config = super().suggest(trial_id)
            ot_trial = _optuna_trial(self, trial_id)
            if config["admitted"]:
                TrialRecord(folder=ot_trial.number, ray_trial_id=trial_id).save(ot_trial.set_user_attr)
                return {**config, "number": ot_trial.number}
            _reject(self, trial_id)  # its record says over_budget
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
            TrialRecord(duration_s=result["time_total_s"]).save(ot_trial.set_user_attr)
        epochs = (result or {}).get("epoch", 0)
        if epochs < self.max_epochs:
            reason = f"stopped by ASHA after epoch {epochs}/{self.max_epochs}"
            TrialRecord(status=PRUNED, reason=reason).save(ot_trial.set_user_attr)
            _finish(self, trial_id, TrialState.PRUNED)
            return
        super().on_trial_complete(trial_id, result, error)


def _record_epoch(ot_trial: optuna.Trial, result: dict) -> None:
    history = TrialRecord(history=TrialRecord.from_attrs(ot_trial.user_attrs).history).with_epoch(
        result["epoch"], {k: result[k] for k in HISTORY_METRICS if k in result})
    history.save(ot_trial.set_user_attr)


# -- the trainable ----------------------------------------------------------------------------------

def trial_folder(run_dir: Path, number: int) -> Path:
    """Where trial `number` trains, on whichever node runs it: the embedded backend's layout."""
    return run_dir / "trials" / f"{number:04d}"


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
    if (folder / "result.json").is_file():
        return read_json(folder / "result.json", "training result")["epochs"]
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
            (folder / "result.json").unlink(missing_ok=True)
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


def _trainable(config: dict[str, Any], space: SearchSpace, run_dir: str, device: str, threads: int,
               keep_checkpoints: bool) -> None:
    """Train one trial, reporting each epoch to Tune with its checkpoint, the last once training is done.

    Tune ends a trial as soon as it has its last epoch (ASHA stops it at max_t), so that epoch is
    reported only after training has written its result and dropped its checkpoint; a finished
    trial needs no checkpoint. If the trial dies in between, its retry trains that epoch again.
    """
    import torch

    torch.set_num_threads(threads)
    arch = Architecture.from_dict(config["architecture"])
    candidate = space.candidate(arch, RampSchedule(tuple(config["ramp"])), handset=config["handset"])
    folder = trial_folder(Path(run_dir), config["number"])
    _align_with_tune(folder)
    constants = {"gflops": candidate.flops / 1e9, "mparams": candidate.params / 1e6}
    last: dict[str, float] = {}

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == space.proxy.epochs:
            last.update(metrics, **constants, epoch=epoch)
            return
        with _staged_checkpoint(folder) as checkpoint:
            tune.report({**metrics, **constants, "epoch": epoch}, checkpoint=checkpoint)

    run_trial(train_config(space, candidate_spec(space, candidate), folder, device,
                           keep_checkpoints=keep_checkpoints), report)
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
        """Drop the ended trial's checkpoint from Tune's storage (training drops its own), show progress."""
        if not self.keep_checkpoints and trial.checkpoint is not None:
            trial.checkpoint.filesystem.delete_dir(trial.checkpoint.path)
        if self.progress:
            self.progress.update(self.study.get_trials(deepcopy=False))


def _check_reachable(address: str) -> None:
    """Fail fast, naming the address, when nothing listens at a HOST:PORT address ('auto' is Ray's to find)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}). Start one "
                        "on that machine with `ray start --head`, or pass --address auto on a node of a running "
                        "cluster") from None


def _connect(address: str) -> None:
    """Join a running cluster, or say clearly why not."""
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        raise UserError(f"--address {address}: could not join a Ray cluster there ({exc}). Start one with "
                        "`ray start --head`, or pass 'auto' on a cluster node; a cluster with token "
                        "authentication needs its token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None


def _check_options(options: SearchOptions) -> None:
    if options.storage:
        raise UserError("--storage is for the optuna backend; with --backend ray, Ray's cluster shares the work "
                        "and the study lives in the run directory")
    if options.device.startswith("cuda") and options.gpus_per_trial <= 0:
        raise UserError(f"--device {options.device} needs --gpus-per-trial > 0 with --backend ray: Ray hides "
                        "the GPUs from trials that reserve none")


def _new_tuner(space: SearchSpace, run_dir: Path, options: SearchOptions, trainable: Any,
               callbacks: list[tune.Callback]) -> tune.Tuner:
    metric, mode = zip(*(METRICS[o] for o in space.objectives))
    searcher = RampOptunaSearch(
        space=DefineByRun(space), metric=list(metric) if space.multi_objective else metric[0],
        mode=list(mode) if space.multi_objective else mode[0], sampler=make_sampler(space),
        study_name=options.study, storage=open_storage(run_dir, None), max_epochs=space.proxy.epochs)
    scheduler = ASHAScheduler(time_attr="training_iteration", metric="top1", mode="max", max_t=space.proxy.epochs,
                              grace_period=ASHA_GRACE_EPOCHS, reduction_factor=ASHA_REDUCTION_FACTOR)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=options.trials,
                                    reuse_actors=False, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=options.study, storage_path=str(run_dir / "ray"), verbose=0,
                                  callbacks=callbacks, checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)))


def run(space: SearchSpace, space_file: Path, run_dir: Path, options: SearchOptions,
        progress: Progress | None = None) -> optuna.Study:
    """Run (or resume) a Ray Tune search; returns the Optuna study that holds its trials."""
    _check_options(options)
    run_dir = run_dir.resolve()
    joined_here = not ray.is_initialized()  # a Ray this process already runs is used as it is
    if joined_here and options.address:
        _connect(options.address)
    elif joined_here:
        # A one-machine cluster. It stays on loopback only if RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was
        # set before Ray was imported; otherwise Ray (on Linux) swaps 127.0.0.1 for this machine's address.
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    # Created (with the hand-set ramp enqueued) before OptunaSearch loads it, so the driver reads
    # progress from the start and the hand-set ramp is the first trial.
    study = open_study(space, run_dir, options.study, None)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, space=space, run_dir=str(run_dir), device=options.device,
                             threads=max(1, int(options.cpus_per_trial)), keep_checkpoints=options.keep_checkpoints),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
    experiment = run_dir / "ray" / options.study
    if tune.Tuner.can_restore(str(experiment)):
        # Failed trials are final (their record says why). Tune resumes unfinished ones from their
        # checkpoints, but the run they were cut from marked their Optuna trials interrupted (below),
        # so the searcher ignores their results.
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True)
    else:
        if experiment.exists():
            shutil.rmtree(experiment)  # an experiment that never wrote its state: nothing to resume
        tuner = _new_tuner(space, run_dir, options, trainable,
                           [StudyCallback(study, progress, options.keep_checkpoints)])
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Tune prints tables to stdout; --json owns stdout
            tuner.fit()
    finally:
        if joined_here:
            ray.shutdown()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # the experiment is over, so a trial still RUNNING was left by a driver that was stopped
        fail_trial(study, trial, TrialRecord(status=INTERRUPTED, reason="interrupted (the search process stopped)"))
    return study
