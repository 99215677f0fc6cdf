"""Real searches on a tiny space: both backends, budget, hand-set ramp first, failures, Ctrl-C, PostgreSQL
(the injected faults are in tests/test_faults_*.py)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

import pg  # tests/pg.py
from rampsearch.errors import RunFailed
from rampsearch.search import SearchOptions, SearchShortfall, run_search
from rampsearch.search.record import TrialRecord
from rampsearch.search.load import load_space

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
CLI = [sys.executable, str(ROOT / "cli.py")]


def _check_outputs(run_dir: Path, trained: int) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "trials.csv")
    assert pd.read_parquet(run_dir / "trials.parquet")["number"].tolist() == frame["number"].tolist()
    assert frame["number"].tolist() == sorted(frame["number"])
    for column in ("number", "state", "value", "flops", "params", "ramp", "duration_s", "top1_e1"):
        assert column in frame.columns
    space = load_space(TINY)
    first = frame.iloc[0]
    assert first["handset"] and json.loads(first["ramp"]) == list(space.handset().ramp.ratios)
    budget = space.budget.gflops * 1e9
    trained_rows = frame[frame["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
    assert (trained_rows[~trained_rows["handset"]]["flops"] <= budget).all()  # nothing over budget trained
    assert (frame[frame["state"] == "OVER_BUDGET"]["flops"] > budget).all()
    assert len(trained_rows) == trained
    best = (run_dir / "best.yaml").read_text()
    out = subprocess.run([*CLI, "flops", "--arch", str(run_dir / "best.yaml"), "--ramp", str(run_dir / "best.yaml"),
                          "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["flops"] <= budget and "ramp:" in best
    return frame


def test_optuna_search_four_trials(tmp_path):
    outcome = run_search(TINY, tmp_path / "run", SearchOptions(trials=4, study="tiny"), "optuna",
                         show_progress=False, log=lambda m: None)
    frame = _check_outputs(tmp_path / "run", trained=4)
    assert outcome.counts["done"] + outcome.counts["pruned"] == 4
    assert (tmp_path / "run" / "study.journal").exists()
    assert frame.filter(regex=r"^param_ratio_\d+$").shape[1] == 5


def test_failing_trial_is_recorded_the_search_goes_on_and_exits_non_zero(tmp_path, monkeypatch):
    import rampsearch.train as train

    real_fit, calls = train.fit, []

    def flaky_fit(config, on_epoch=None):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("simulated out of memory")
        return real_fit(config, on_epoch)

    monkeypatch.setattr(train, "fit", flaky_fit)
    with pytest.raises(SearchShortfall, match=r"fell short: 1 trial\(s\) failed \(trial \d+: MemoryError: simulated") as info:
        run_search(TINY, tmp_path / "run", SearchOptions(trials=3, study="tiny"), "optuna",
                   show_progress=False, log=lambda m: None)
    outcome = info.value.outcome  # what it did reach is written and reported
    frame = pd.read_csv(tmp_path / "run" / "trials.csv")
    failed = frame[frame["state"] == "FAIL"]
    assert len(failed) == 1 and "MemoryError: simulated out of memory" in failed.iloc[0]["reason"]
    assert outcome.counts["done"] + outcome.counts["pruned"] == 2


def test_diverging_training_fails_with_its_reason(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(TINY.read_text().replace("    workers: 0", "    workers: 0\n    lr: 1.0e+12\n    clip_grad: null"))
    with pytest.raises(RunFailed, match="no trial completed; 1 failed, the first with: TrainingDiverged"):
        run_search(space, tmp_path / "run", SearchOptions(trials=1, study="tiny"), "optuna", show_progress=False,
                   log=lambda m: None)
    row = pd.read_csv(tmp_path / "run" / "trials.csv").iloc[0]
    assert row["state"] == "FAIL" and "diverged" in row["reason"]


def _states(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    from rampsearch.search.study import open_storage

    try:
        return optuna.load_study(study_name="tiny", storage=open_storage(run_dir, None)).get_trials()
    except (KeyError, FileNotFoundError):
        return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray rewrites 127.0.0.1 to the machine's interface address unless told this is a one-machine
# cluster; this keeps every connection of the test on loopback.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture
def ray_cluster():
    ray = Path(sys.executable).parent / "ray"
    port = _free_port()
    env = {**os.environ, **RAY_ENV}
    subprocess.run([str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, env=env)


def test_ray_search_on_a_local_cluster(tmp_path, ray_cluster):
    run_dir = tmp_path / "run"
    result = subprocess.run([*CLI, "search", str(TINY), "--backend", "ray", "--address", ray_cluster,
                             "--trials", "4", "--cpus-per-trial", "1", "--out", str(run_dir), "--json"],
                            capture_output=True, text=True, timeout=600, env={**os.environ, **RAY_ENV})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    frame = _check_outputs(run_dir, trained=4)
    # ASHA may stop trials after epoch 1: those must be PRUNED, never COMPLETE with a 1-epoch value.
    complete = frame[frame["state"] == "COMPLETE"]
    assert complete["top1_e2"].notna().all()
    assert summary["counts"]["done"] >= 1


@pytest.mark.skipif(pg.unavailable_reason() is not None, reason=str(pg.unavailable_reason()))
def test_postgresql_study_shared_by_two_processes(tmp_path):
    with pg.postgres_server() as url:
        commands = [[*CLI, "search", str(TINY), "--storage", url, "--study", "shared", "--trials", "4",
                     "--out", str(tmp_path / f"machine{i}"), "--quiet", "--json"] for i in (1, 2)]
        processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
        outputs = [p.communicate(timeout=600) for p in processes]
        for p, (out, err) in zip(processes, outputs):
            assert p.returncode == 0, err[-3000:]
            assert "s3cret-password" not in out + err  # the password never shows
        study = optuna.load_study(study_name="shared", storage=url)
        trained = [TrialRecord.of(t) for t in study.trials if not TrialRecord.of(t).rejected]
        workers = {r.worker["pid"] for r in trained}
        assert len(workers) == 2  # both processes worked on the one study
        # each process sampled with its own seed, and no candidate was trained twice
        assert len({r.sampler_seed for r in trained}) == 2
        candidates = [(json.dumps(r.architecture), r.ramp) for r in trained]
        assert len(candidates) == len(set(candidates))
        assert 4 <= len(trained) <= 5  # a race can let both start the last trial
        assert sum(TrialRecord.of(t).handset for t in study.trials) == 1
        meta = json.loads((tmp_path / "machine1" / "search.json").read_text())
        assert "s3cret-password" not in json.dumps(meta) and "***" in meta["storage"]


def test_worker_processes_share_the_journal_study(tmp_path):
    outcome = run_search(TINY, tmp_path / "run", SearchOptions(trials=4, study="tiny", workers=2), "optuna",
                         show_progress=False, log=lambda m: None)
    trials = [TrialRecord.of(t) for t in outcome.study.get_trials() if not TrialRecord.of(t).rejected]
    assert len(trials) == 4  # the count is shared: the two workers do not each run four
    assert len({r.worker["pid"] for r in trials}) == 2
    _check_outputs(tmp_path / "run", trained=4)


INTERRUPTED_EPOCHS = 8


def test_ctrl_c_marks_the_running_trial_interrupted_and_the_rerun_retries_it(tmp_path):
    run_dir = tmp_path / "run"
    space = tmp_path / "space.yaml"  # longer trials, so the interrupt surely lands inside one
    space.write_text(TINY.read_text().replace("  epochs: 2\n  data:", f"  epochs: {INTERRUPTED_EPOCHS}\n  data:"))
    command = [*CLI, "search", str(space), "--out", str(run_dir), "--trials", "2", "--quiet"]
    # Ctrl-C's default action in the child, whatever an earlier test left in this process: an inherited
    # SIG_IGN survives exec, and the search would then ignore the interrupt and finish (exit 0).
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline:  # interrupt while the first trial has trained an epoch
        running = [t for t in _states(run_dir) if t.state == optuna.trial.TrialState.RUNNING] \
            if (run_dir / "study.journal").exists() else []
        if running and TrialRecord.of(running[0]).history:
            break
        time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("the search never trained an epoch")
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    interrupted = [t for t in _states(run_dir) if TrialRecord.of(t).interrupted]
    assert len(interrupted) == 1 and interrupted[0].state == optuna.trial.TrialState.FAIL
    assert "Ctrl-C" in TrialRecord.of(interrupted[0]).reason
    folder = run_dir / "trials" / f"{interrupted[0].number:04d}"
    assert json.loads((folder / "checkpoint.json").read_text())["epoch"] >= 1  # what the retry resumes from

    subprocess.run(command, check=True, capture_output=True, timeout=600)
    frame = pd.read_csv(run_dir / "trials.csv")
    retry = frame[frame["retry_of"] == interrupted[0].number]
    assert len(retry) == 1 and retry.iloc[0]["state"] == "COMPLETE"
    assert retry.iloc[0]["ramp"] == frame.loc[frame["number"] == interrupted[0].number, "ramp"].iloc[0]
    # the interrupted trial does not count towards --trials: two trained trials besides it
    assert frame["state"].isin(["COMPLETE", "PRUNED"]).sum() == 2
    # the retry trained in the interrupted trial's folder (so it resumed there), each epoch once
    assert pd.read_csv(folder / "metrics.csv")["epoch"].tolist() == list(range(1, INTERRUPTED_EPOCHS + 1))
    # a finished training keeps its weights and metrics, not its resume state
    assert (folder / "model.safetensors").exists() and not (folder / "checkpoint.json").exists()
    assert not list(folder.glob("ckpt-*"))
