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

The package, one concept per module: `searcher` (Ray's OptunaSearch, fixed for our records),
`worker` (the trainable and its checkpoint hand-off), `tuning` (the Tune callback and scheduler),
`cluster` (joining a cluster, token authentication) and `pickled` (the driver's objects in Tune's
experiment); this module is the driver, `run`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray import tune

from ...errors import UserError
from .. import methods
from ..options import SearchOptions
from ..progress import Progress
from ..record import INTERRUPTED, TrialRecord
from ..space import SearchSpace
from ..study import counted_trials, fail_trial, make_sampler, open_storage, open_study, retry_interrupted
from . import worker
from .cluster import connect
from .pickled import DRIVER
from .searcher import NOT_IN_EXPERIMENT, STOPPED, DefineByRun, RampOptunaSearch
from .tuning import StudyCallback, make_scheduler, trial_dirname

# What Tune reports for each objective, and its mode; `accuracy` is the searched score (search.score).
METRICS = {"flops": ("gflops", "min"), "params": ("mparams", "min")}


def _metric(space: SearchSpace, objective: str) -> tuple[str, str]:
    return (space.score.metric, space.score.mode) if objective == "accuracy" else METRICS[objective]


# Tune retries a failed trial (an exception, a lost node) this often, each time from its latest
# checkpoint: enough for a node lost twice, while a trial that fails every time (a bug, a candidate
# too big for the GPU) costs only three short starts.
MAX_FAILURES = 2

# Tune's defaults that a search changes (unless set in the environment). Tune saves its experiment
# state (what a rerun restores) every 10 s or more by default; a search saves it at every step of
# Tune's loop, so a killed driver's rerun resumes every trial from its newest checkpoint (the state
# is a few KB per trial). Tune warns whenever one save follows another within 5 s, as they then
# always do: only noise.
TUNE_DEFAULTS = {"TUNE_GLOBAL_CHECKPOINT_S": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


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
        max_epochs=methods.of_run(space, options).epochs(space), sampler_seed=seed, method=options.method,
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
        # a method that reports no epochs keeps its worker, and what it loaded (one-shot: the supernet and
        # scoring images), for the next candidate
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(space, options.method),
                                    num_samples=missing, reuse_actors=not methods.of_run(space, options).per_epoch,
                                    trial_dirname_creator=trial_dirname),
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
        connect(options.address)
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
            tune.with_parameters(worker.trainable, space=space, run_dir=str(run_dir), options=options,
                                 threads=max(1, int(options.cpus_per_trial)), finished=finished),
            {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
        searcher = _searcher(space, run_dir, options, seed)
        callback = StudyCallback(study, progress, options.keep_checkpoints)
        DRIVER.update(searcher=searcher, callback=callback)
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
        DRIVER.clear()
        if joined_here:
            ray.shutdown()
    # Tune ends early only when stopped (Ctrl-C), after saving its experiment with this searcher's
    # unfinished trials, which the rerun resumes; a normal end leaves none.
    stopped = searcher.settle_running(STOPPED)
    if stopped:
        raise KeyboardInterrupt(f"Ray Tune stopped before trial(s) {stopped} finished")
    return study
