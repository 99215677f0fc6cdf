"""The distributed backend: Ray Tune schedules proxy trainings across CPU/GPU workers and machines.

Optuna still samples (Ray's OptunaSearch, define-by-run, the same space and constraints as the
embedded backend) and keeps every trial in the run directory's journal-file study, so the
outputs are the same. ASHA stops weak trials early; `--gpus-per-trial 0.25` packs four trials on
one GPU. Three things OptunaSearch gets wrong for us are fixed in `RampOptunaSearch`:
over-budget candidates are rejected in `suggest` (never scheduled, as in the embedded backend);
ASHA-stopped trials are told to Optuna as PRUNED, not as COMPLETE full-fidelity results; errored
trials are FAIL even if they reported some epochs.

Multi-node: the package must be installed on every node and the run directory must be on a
filesystem all nodes see (NFS), since Tune keeps trial checkpoints under it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

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
from ray.tune.schedulers import ASHAScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from ..architecture import Architecture
from ..errors import UserError
from ..ramp import RampSchedule
from .optuna_backend import MAX_INFEASIBLE_PER_TRIAL, make_sampler, open_storage
from .options import SearchOptions
from .progress import Progress
from .space import SearchSpace
from .trial import admit, run_trial, train_config

METRICS = {"accuracy": ("top1", "max"), "flops": ("gflops", "min"), "params": ("mparams", "min")}


class DefineByRun:
    """The space as Ray's OptunaSearch wants it: a picklable define-by-run callable."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        candidate = self.space.suggest(trial)
        return {"architecture": candidate.arch.to_dict(), "ramp": list(candidate.ramp.ratios),
                "baseline": candidate.baseline, "admitted": admit(trial, candidate),
                "gflops": candidate.flops / 1e9, "mparams": candidate.params / 1e6}


class RampOptunaSearch(OptunaSearch):
    """OptunaSearch that rejects over-budget candidates and tells Optuna the truth about early stops."""

    def __init__(self, *args: Any, max_epochs: int, baseline: dict[str, Any], **kwargs: Any) -> None:
        self.max_epochs, self.baseline = max_epochs, baseline  # before super(): it sets the study up
        self.history: dict[str, list[dict[str, float]]] = {}
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode):
        super()._setup_study(mode)
        self._ot_study.enqueue_trial(self.baseline, skip_if_exists=True)

    def suggest(self, trial_id: str):
        for _ in range(MAX_INFEASIBLE_PER_TRIAL):
            config = super().suggest(trial_id)
            if config is None or config.get("admitted", True):
                if config is not None:
                    self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
                return config
            self._ot_study.tell(self._ot_trials.pop(trial_id), state=TrialState.PRUNED)
        return Searcher.FINISHED

    def _finished(self, trial_id: str) -> bool:
        """Whether Optuna already holds this trial's result: after Tuner.restore, Tune may rerun trials
        from a checkpoint older than the study, and a finished Optuna trial cannot be written again."""
        ot_trial = self._ot_trials[trial_id]
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def _record(self, trial_id: str, result: dict) -> None:
        history = self.history.setdefault(trial_id, [])
        if "top1" not in result or (history and history[-1]["epoch"] == result["training_iteration"]):
            return
        history.append({"epoch": result["training_iteration"],
                        **{k: result[k] for k in ("top1", "top5", "loss", "train_loss") if k in result}})
        self._ot_trials[trial_id].set_user_attr("history", history)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._ot_trials or self._finished(trial_id):
            return
        self._record(trial_id, result)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials or self._finished(trial_id):
            self._completed_trials.add(trial_id)
            return
        ot_trial = self._ot_trials[trial_id]
        if result:  # Tune hands the last epoch's result only to on_trial_complete
            self._record(trial_id, result)
        if result and "time_total_s" in result:
            ot_trial.set_user_attr("duration_s", result["time_total_s"])
        epochs = (result or {}).get("training_iteration", 0)
        if error or epochs < self.max_epochs:
            reason = "error in the trainable (see the Ray trial log)" if error else \
                f"stopped by ASHA after epoch {epochs}"
            ot_trial.set_user_attr("reason", reason)
            try:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL if error else TrialState.PRUNED)
            except Exception:  # e.g. told already by a restored searcher
                pass
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


def _trainable(config: dict[str, Any], space: SearchSpace, run_dir: str, device: str | None, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    arch = Architecture.from_dict(config["architecture"])
    candidate = space.candidate(arch, RampSchedule(tuple(config["ramp"])), baseline=config["baseline"])
    folder = Path(run_dir) / "trials" / f"ray_{tune.get_context().get_trial_id()}"
    restored = tune.get_checkpoint()
    if restored is not None and not (folder / "checkpoint").exists():
        restored.to_directory(str(folder / "checkpoint"))  # a retry on another node
    constants = {"gflops": candidate.flops / 1e9, "mparams": candidate.params / 1e6}

    def report(epoch: int, metrics: dict[str, float]) -> None:
        checkpoint_dir = folder / "checkpoint"
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
        tune.report({**metrics, **constants, "epoch": epoch}, checkpoint=checkpoint)

    run_trial(train_config(space, candidate, folder, device), report)


class ProgressCallback(tune.Callback):
    """Refreshes the progress line from the study whenever a Tune trial ends."""

    def __init__(self, study: optuna.Study, progress: Progress) -> None:
        self.study, self.progress = study, progress

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.progress.update(self.study.get_trials(deepcopy=False))

    on_trial_error = on_trial_complete


def _connect(address: str) -> None:
    """Join a running cluster, or say clearly why not."""
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        raise UserError(f"--address {address}: could not join a Ray cluster there ({exc}). Start one with "
                        "`ray start --head`, or pass 'auto' on a cluster node; a cluster with token "
                        "authentication needs its token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None


def run(space: SearchSpace, space_file: Path, run_dir: Path, options: SearchOptions,
        progress: Progress | None = None) -> optuna.Study:
    """Run (or resume) a Ray Tune search; returns the Optuna study that holds its trials."""
    if options.storage:
        raise UserError("--storage is for the optuna backend; with --backend ray, Ray's cluster shares the work "
                        "and the study lives in the run directory")
    run_dir = run_dir.resolve()
    started_here = not options.address and not ray.is_initialized()
    if options.address:
        _connect(options.address)
    elif started_here:  # a one-machine cluster on loopback
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    epochs = space.proxy.get("epochs", 3)
    metric, mode = zip(*(METRICS[o] for o in space.objectives))
    searcher = RampOptunaSearch(
        space=DefineByRun(space), metric=list(metric) if space.multi_objective else metric[0],
        mode=list(mode) if space.multi_objective else mode[0], sampler=make_sampler(space),
        study_name=options.study, storage=open_storage(run_dir, None), max_epochs=epochs,
        baseline=space.baseline_params())
    device = options.device or ("cuda" if options.gpus_per_trial > 0 else None)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, space=space, run_dir=str(run_dir), device=device,
                             threads=max(1, int(options.cpus_per_trial))),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
    # Created here (OptunaSearch then loads it) so the driver can read progress from the start.
    study = optuna.create_study(study_name=options.study, storage=open_storage(run_dir, None),
                                directions=space.directions, load_if_exists=True)
    experiment = run_dir / "ray" / options.study
    callbacks = [ProgressCallback(study, progress)] if progress else []
    if tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        if experiment.exists():
            shutil.rmtree(experiment)  # an experiment that never wrote its state: nothing to resume
        scheduler = ASHAScheduler(time_attr="training_iteration", metric="top1", mode="max", max_t=epochs,
                                  grace_period=1, reduction_factor=3)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=options.trials,
                                        reuse_actors=False),
            run_config=tune.RunConfig(name=options.study, storage_path=str(run_dir / "ray"), verbose=0,
                                      callbacks=callbacks,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      failure_config=tune.FailureConfig(max_failures=2)))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Tune prints tables to stdout; --json owns stdout
            tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    study = optuna.load_study(study_name=options.study, storage=open_storage(run_dir, None))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # the experiment is over, so a trial still RUNNING was left by a driver that was killed
        study._storage.set_trial_user_attr(trial._trial_id, "error", "interrupted (the search process died)")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return study
