"""Faults in a Ray search, each checked against what an uninterrupted search does: the driver killed
(SIGKILL) or stopped with Ctrl-C (SIGINT) mid-trial and the same command rerun; a trial suggested
after Tune's last save; the hand-set ramp never stopped by ASHA; token authentication used exactly
when the cluster uses it, whatever token an earlier `ray start` left in ~/.ray.

The clusters are real, on loopback: `ray start --head --block` with a temporary HOME and temp dir,
stopped by killing the processes that descend from it (never `ray stop`, which stops every Ray
cluster on the machine, other people's too).
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from rampsearch.errors import UserError
from rampsearch.search import ray_backend
from rampsearch.search.ray_backend import cluster as ray_join, pickled as ray_pickled, searcher as ray_searcher, tuning
from rampsearch.search.ray_backend import worker as ray_worker
from rampsearch.search.record import INTERRUPTED, TrialRecord
from rampsearch.search.options import SearchOptions
from rampsearch.search.load import load_space, parse_space
from rampsearch.search.space import SearchSpace
from rampsearch.search.study import counted_trials, open_storage, trial_by_number

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
CLI = [sys.executable, str(ROOT / "cli.py")]
RAY = Path(sys.executable).parent / "ray"
# No usage stats, and every connection on loopback (on Linux, Ray otherwise swaps 127.0.0.1 for the
# machine's interface address). OMP_NUM_THREADS=1: the trials share two cores with the test.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_NUM_THREADS": "1"}
# Both trials at once, one CPU each. Epochs take about half a second here: a signal lands in the
# epochs between SAVED_EPOCHS and EPOCHS (see _stop_mid_trial) on a machine several times faster.
EPOCHS, TRIALS = 5, 2
SAVED_EPOCHS = 2
CLUSTER_CPUS = TRIALS
TOKEN = "5f0c3a9e7d2b4c18a6e1f3b5d7c9e0a2"  # the token cluster's; any 32 hex digits
LEFTOVER_TOKEN = "0" * 32  # what an earlier `ray start` left in ~/.ray/auth_token: no cluster's
START_TIMEOUT_S = 60  # `ray start --head` takes a few seconds
STOP_TIMEOUT_S = 10  # killed processes end at once (`ray start`'s own SIGTERM shutdown takes tens of seconds)
SEARCH_TIMEOUT_S = 240
POLL_S = 0.1


# -- loopback clusters ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _home(parent: Path, token: str | None) -> Path:
    """A HOME folder, with `token` in ~/.ray/auth_token as `ray start` leaves it."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=parent))
    if token:
        (home / ".ray").mkdir()
        (home / ".ray" / "auth_token").write_text(token)
    return home


def _processes() -> dict[int, tuple[str, int]]:
    """{pid: (state, parent pid)} of every process (Linux /proc)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue  # the process ended meanwhile
        out[int(stat.parent.name)] = (state, int(ppid))
    return out


def _tree(root: int) -> set[int]:
    """`root` and its descendants: a cluster's processes, its workers included (each worker leads a
    process group of its own, so signalling the cluster's group does not reach them)."""
    processes, found, todo = _processes(), set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [child for child, (_, parent) in processes.items() if parent == pid and child not in found]
    return found


def _alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has ended; it only waits to be reaped)."""
    return {pid for pid, (state, _) in _processes().items() if pid in pids and state != "Z"}


def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return _alive(pids)


@dataclass
class Cluster:
    address: str
    process: subprocess.Popen  # `ray start --head --block`: every process of the cluster descends from it
    temp_dir: str


@pytest.fixture(scope="module")
def clusters() -> Iterator[dict[str, Cluster]]:
    """The clusters `_cluster` started by kind: "open" (no authentication, though its HOME holds a
    token) and "token" (token authentication with TOKEN). When the module is done, they are stopped
    and checked to have left no process behind."""
    started: dict[str, Cluster] = {}
    yield started
    for cluster in started.values():
        processes = _tree(cluster.process.pid)
        for pid in _alive(processes):
            with contextlib.suppress(ProcessLookupError):  # it may exit between the look and the kill
                os.kill(pid, signal.SIGKILL)
        cluster.process.wait()
        left = _wait_gone(processes, STOP_TIMEOUT_S)
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left behind by the {cluster.address} cluster: {left}"


def _cluster(clusters: dict[str, Cluster], kind: str, tmp: Path) -> Cluster:
    """The cluster of `kind` ("open" or "token"), started on first use."""
    if kind in clusters:
        return clusters[kind]
    home = _home(tmp, LEFTOVER_TOKEN if kind == "open" else TOKEN)
    port = _free_port()
    # A short temp dir: Ray's socket paths must fit in 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    env = {**os.environ, **RAY_ENV, "HOME": str(home), "RAY_AUTH_MODE": "disabled" if kind == "open" else "token"}
    process = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", str(CLUSTER_CPUS), "--include-dashboard", "false", "--disable-usage-stats",
         "--temp-dir", temp_dir], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    clusters[kind] = Cluster(f"127.0.0.1:{port}", process, temp_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return clusters[kind]
        except OSError:
            assert process.poll() is None, f"ray start --head ({kind}) exited with status {process.returncode}"
            time.sleep(POLL_S)
    pytest.fail(f"the {kind} Ray cluster did not start within {START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults_ray")


@pytest.fixture(scope="module")
def open_cluster(clusters, workdir) -> Cluster:
    return _cluster(clusters, "open", workdir)


@pytest.fixture(scope="module")
def token_cluster(clusters, workdir) -> Cluster:
    return _cluster(clusters, "token", workdir)


# -- searches on the cluster without authentication, by a driver whose HOME holds a leftover token --

@pytest.fixture(scope="module")
def space_file(workdir) -> Path:
    data = yaml.safe_load(TINY.read_text())  # pruner none: no early stop, so timing changes no decision
    data["proxy"]["epochs"] = EPOCHS
    path = workdir / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def driver_env(workdir) -> dict[str, str]:
    return {**os.environ, **RAY_ENV, "HOME": str(_home(workdir, LEFTOVER_TOKEN))}


def _command(space_file: Path, cluster: Cluster, run_dir: Path) -> list[str]:
    return [*CLI, "search", str(space_file), "--backend", "ray", "--address", cluster.address,
            "--trials", str(TRIALS), "--cpus-per-trial", "1", "--out", str(run_dir)]


def _trials(run_dir: Path) -> list[FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=open_storage(run_dir, None)).get_trials()


def _complete(trials: list[FrozenTrial]) -> dict[str, float]:
    """Value of each complete trial, keyed by its params."""
    return {json.dumps(t.params, sort_keys=True): t.value for t in trials if t.state == TrialState.COMPLETE}


@pytest.fixture(scope="module")
def uninterrupted(space_file, open_cluster, driver_env, workdir) -> list[FrozenTrial]:
    """The trials of the search run once without a fault. It runs against a cluster without
    authentication from a HOME that holds a leftover token: before the fix, every trial died."""
    run_dir = workdir / "uninterrupted"
    result = subprocess.run(_command(space_file, open_cluster, run_dir), env=driver_env, capture_output=True,
                            text=True, timeout=SEARCH_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _trials(run_dir)
    assert len(_complete(trials)) == TRIALS
    return trials


def _stop_mid_trial(command: list[str], env: dict[str, str], run_dir: Path, sig: signal.Signals
                    ) -> tuple[subprocess.CompletedProcess, list[FrozenTrial]]:
    """Run `command` and send it `sig` mid-trial; (how it ended, the trials then).

    Mid-trial: once a trial has reported SAVED_EPOCHS epochs and has more to go. Tune saves its
    experiment while it handles a checkpoint, one epoch before the next one's report, so that
    trial is surely in Tune's saved state with a checkpoint to resume from.
    """
    log = run_dir.with_suffix(".stderr")  # a file, not a pipe nobody reads while the search runs
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + SEARCH_TIMEOUT_S
    while time.monotonic() < deadline:
        trials = _trials(run_dir) if (run_dir / "study.journal").exists() else []
        if any(t.state == TrialState.RUNNING and SAVED_EPOCHS <= len(TrialRecord.of(t).history) < EPOCHS
               for t in trials):
            break
        assert process.poll() is None, "the search ended before a signal could land mid-trial"
        time.sleep(POLL_S)
    else:
        process.kill()
        pytest.fail(f"no trial reached epoch {SAVED_EPOCHS} within {SEARCH_TIMEOUT_S} s")
    process.send_signal(sig)
    process.wait(timeout=SEARCH_TIMEOUT_S)
    return subprocess.CompletedProcess(command, process.returncode, "", log.read_text()), _trials(run_dir)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_a_stopped_search_resumes_and_ends_as_an_uninterrupted_one(uninterrupted, space_file, open_cluster,
                                                                    driver_env, workdir, sig):
    run_dir = workdir / f"stopped-{sig.name}"
    command = _command(space_file, open_cluster, run_dir)
    stopped, before = _stop_mid_trial(command, driver_env, run_dir, sig)
    if sig == signal.SIGINT:  # Tune saves its experiment and the driver exits like any Ctrl-C
        assert stopped.returncode == 130 and "interrupted" in stopped.stderr, stopped.stderr[-3000:]
        assert "Traceback" not in stopped.stderr
        unfinished = [t for t in before if t.state == TrialState.RUNNING]
        assert unfinished and all(TrialRecord.of(t).reason == ray_backend.STOPPED for t in unfinished)
    else:
        assert stopped.returncode == -signal.SIGKILL
    # Tune had saved these with a checkpoint: the rerun must resume them in place. A trial suggested
    # after Tune's last save (possible when killed) is retried instead, and must count once.
    saved = {t.number for t in before
             if t.state == TrialState.RUNNING and len(TrialRecord.of(t).history) >= SAVED_EPOCHS}
    assert saved
    kept = {t.number: t.value for t in before if t.state.is_finished()}

    rerun = subprocess.run(command, env=driver_env, capture_output=True, text=True, timeout=SEARCH_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _trials(run_dir)
    by_number = {t.number: t for t in after}
    assert all(by_number[n].value == value for n, value in kept.items())  # finished trials untouched
    # resumed in their own Optuna trials, not retried as new ones
    assert all(by_number[n].state == TrialState.COMPLETE for n in saved)
    assert _complete(after) == _complete(uninterrupted)  # the same candidates, the same values
    best = max(after, key=lambda t: t.value if t.state == TrialState.COMPLETE else -1)
    reference = max(uninterrupted, key=lambda t: t.value if t.state == TrialState.COMPLETE else -1)
    assert (best.params, best.value) == (reference.params, reference.value)
    assert counted_trials(after)[0] == TRIALS  # nothing interrupted counts, nothing counts twice
    for trial in after:
        record = TrialRecord.of(trial)
        if trial.state != TrialState.COMPLETE or record.rejected:  # a repeat answered from an earlier trial
            continue
        assert [row["epoch"] for row in record.history] == list(range(1, EPOCHS + 1))
        metrics = (run_dir / "trials" / f"{record.folder:04d}" / "metrics.csv").read_text().splitlines()
        assert [int(line.split(",")[0]) for line in metrics[1:]] == list(range(1, EPOCHS + 1))
    for number in saved:
        # Tune's log of the trial: the rerun went on from its checkpoint instead of starting over,
        # and Tune's epoch count stayed the training's
        (log,) = (run_dir / "ray" / "tiny").glob(f"{number:04d}-*/result.json")
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        assert all(row["epoch"] == row["training_iteration"] for row in rows)
        assert any(row["iterations_since_restore"] == 1 and row["epoch"] > 1 for row in rows)


# -- restoring the searcher -------------------------------------------------------------------------

def _searcher(run_dir: Path) -> ray_backend.RampOptunaSearch:
    space = load_space(TINY)
    return ray_backend.RampOptunaSearch(
        space=ray_backend.DefineByRun(space), metric="top1", mode="max", sampler=optuna.samplers.RandomSampler(seed=0),
        study_name="tiny", storage=open_storage(run_dir, None), max_epochs=2, sampler_seed=0)


def _epoch(epoch: int, top1: float) -> dict[str, float]:
    return {"top1": top1, "top5": 90.0, "loss": 1.0, "train_loss": 1.0, "epoch": epoch, "training_iteration": epoch,
            "time_total_s": 1.0}


@pytest.mark.faults
def test_a_restored_searcher_resumes_what_tune_saved_and_retries_what_it_did_not(tmp_path):
    first = _searcher(tmp_path)
    saved, done = first.suggest("saved"), first.suggest("done")
    first.on_trial_result("saved", _epoch(1, 40.0))
    state = tmp_path / "searcher-state.pkl"
    first.save(str(state))  # what Tune saves with its experiment
    first.on_trial_complete("done", _epoch(2, 50.0))  # finished after the save
    unsaved = first.suggest("unsaved")  # suggested after the save; then the driver is killed

    restored = _searcher(tmp_path)
    restored.restore(str(state))
    study = ray_searcher._optuna_study(restored)
    trial = trial_by_number(study, saved["number"])
    assert trial.state == TrialState.RUNNING and TrialRecord.of(trial).reason == ray_searcher.RESUMED
    restored.on_trial_result("saved", _epoch(2, 41.0))  # Tune resumes it: its epochs go on in the same trial
    restored.on_trial_complete("saved", _epoch(2, 41.0))
    trial = trial_by_number(study, saved["number"])
    assert trial.value == 41.0 and [r["epoch"] for r in TrialRecord.of(trial).history] == [1, 2]

    restored.on_trial_result("done", _epoch(2, 10.0))  # Tune reruns it from an older state: ignored
    restored.on_trial_complete("done", _epoch(2, 10.0))
    assert trial_by_number(study, done["number"]).value == 50.0

    trial = trial_by_number(study, unsaved["number"])
    record = TrialRecord.of(trial)
    assert trial.state == TrialState.FAIL and record.status == INTERRUPTED
    assert record.reason == ray_searcher.NOT_IN_EXPERIMENT and counted_trials(study.get_trials())[0] == 2
    retry = restored.suggest("next")  # the Tune trial the restored experiment adds in its place
    assert retry["ramp"] == unsaved["ramp"] and retry["architecture"] == unsaved["architecture"]
    assert TrialRecord.of(trial_by_number(study, retry["number"])).retry_of == unsaved["number"]


@pytest.mark.faults
def test_a_trial_that_finished_after_tunes_last_save_is_not_trained_again(tmp_path):
    # Tune resumes it from its checkpoint; the trainable returns before it touches Tune or training
    options = SearchOptions(trials=1, study="tiny", device="cpu", method="train")
    assert ray_worker.trainable({"number": 3}, space=None, run_dir=str(tmp_path), options=options, threads=1,
                                  finished=frozenset({3})) is None
    assert not list(tmp_path.iterdir())


@pytest.mark.faults
def test_tune_pickles_the_searcher_and_callback_as_the_restoring_drivers_own(tmp_path):
    """A restored Tuner gets the rerun's study and progress bar, not the first run's (a terminal's
    tqdm bar does not even unpickle); Tune then loads its saved searcher state into that searcher."""
    searcher = _searcher(tmp_path)
    callback = ray_backend.StudyCallback(ray_searcher._optuna_study(searcher), None, keep_checkpoints=False)
    pickled = pickle.dumps({"search_alg": searcher, "callbacks": [callback]})
    rerun_searcher, rerun_callback = _searcher(tmp_path), ray_backend.StudyCallback(None, None, True)
    ray_pickled.DRIVER.update(searcher=rerun_searcher, callback=rerun_callback)
    try:
        restored = pickle.loads(pickled)
    finally:
        ray_pickled.DRIVER.clear()
    assert restored["search_alg"] is rerun_searcher and restored["callbacks"] == [rerun_callback]


# -- early stopping ---------------------------------------------------------------------------------

def _space(**search: str) -> SearchSpace:
    data = yaml.safe_load(TINY.read_text())
    data["search"].update(search)
    return parse_space(data)


@pytest.mark.faults
def test_the_handset_trial_is_never_stopped_by_asha():
    asha = tuning.make_scheduler(_space(pruner="median"))
    assert isinstance(asha, tuning.HandsetSparingASHA)
    strong = [SimpleNamespace(trial_id=f"s{i}", config={"handset": False}) for i in range(4)]
    weak, handset = (SimpleNamespace(trial_id=name, config={"handset": name == "handset"})
                     for name in ("weak", "handset"))
    for trial in (*strong, weak, handset):
        asha.on_trial_add(None, trial)
    for trial in strong:
        asha.on_trial_result(None, trial, {"training_iteration": 1, "top1": 90.0})
    # at the first rung, the weakest is stopped, unless it is the hand-set ramp
    assert asha.on_trial_result(None, weak, {"training_iteration": 1, "top1": 10.0}) == TrialScheduler.STOP
    assert asha.on_trial_result(None, handset, {"training_iteration": 1, "top1": 10.0}) == TrialScheduler.CONTINUE


@pytest.mark.faults
def test_tune_stops_trials_early_exactly_when_the_embedded_backend_prunes():
    assert isinstance(tuning.make_scheduler(_space(pruner="none")), FIFOScheduler)
    assert isinstance(tuning.make_scheduler(_space(pruner="hyperband")), tuning.HandsetSparingASHA)
    data = yaml.safe_load(TINY.read_text())
    data["objectives"], data["search"]["sampler"], data["search"]["pruner"] = ["accuracy", "flops"], "nsga2", "median"
    assert isinstance(tuning.make_scheduler(parse_space(data)), FIFOScheduler)  # Optuna cannot prune several


# -- token authentication ---------------------------------------------------------------------------

JOIN = """
import os, sys, ray
from rampsearch.search.ray_backend import cluster
cluster.connect(sys.argv[1])
print(os.environ["RAY_AUTH_MODE"], ray.get(ray.remote(num_cpus=0)(type("Ping", (), {"pid": lambda self: os.getpid()}))
                                           .remote().pid.remote(), timeout=60))
ray.shutdown()
"""


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("kind, mode", [("open", "disabled"), ("token", "token")])
def test_a_cluster_is_joined_with_a_token_exactly_when_it_requires_one(clusters, workdir, kind, mode):
    """An actor (what a trial runs in) answers the driver: the driver's auth mode is the cluster's,
    though its HOME holds a token in both cases (the token cluster's own, or a leftover one)."""
    cluster = _cluster(clusters, kind, workdir)
    home = _home(workdir, TOKEN if kind == "token" else LEFTOVER_TOKEN)
    env = {**os.environ, **RAY_ENV, "HOME": str(home)}
    env.pop("RAY_AUTH_MODE", None)
    result = subprocess.run([sys.executable, "-c", JOIN, cluster.address], env=env, capture_output=True, text=True,
                            timeout=SEARCH_TIMEOUT_S, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    reported_mode, pid = result.stdout.split()
    assert reported_mode == mode and int(pid) > 0


@pytest.mark.faults
@pytest.mark.parametrize("token, message", [(None, "requires token authentication and this machine has no token"),
                                            (LEFTOVER_TOKEN, "rejects this machine's auth token")],
                         ids=["no-token", "wrong-token"])
def test_a_token_cluster_without_its_token_is_one_clear_error(token_cluster, workdir, monkeypatch, token, message):
    monkeypatch.setenv("HOME", str(_home(workdir, token)))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match=rf"^--address {token_cluster.address}: that Ray cluster {message}.*"
                                        r"ray get-auth-token"):
        ray_join.connect(token_cluster.address)
