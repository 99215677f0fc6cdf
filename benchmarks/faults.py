"""Recovery time of a search after each fault the embedded backend guards against.

Each case runs the same small search (tests/data/tiny_space.yaml at 4 proxy epochs, 3 trials,
random sampler) through the CLI, injects one fault, reruns the command, and reports what the fault
cost: the faulted search's total wall time (up to the fault, plus the rerun) minus an uninterrupted
search's, measured side by side in the same round. Every result is checked against the
uninterrupted search (the same completed trials with the same values), so a fast but wrong
recovery fails here too.

    .venv/bin/python benchmarks/faults.py --repeats 3

Cases: `kill` (SIGKILL while a searched trial trains, after its first epoch), `damaged-checkpoint`
(the same, after epoch 2, then random bytes written into the current weights checkpoint), and
`torn-journal` (a finished search whose study journal lost the second half of its last record).
With `--ray`, also the Ray backend's `ray-kill` and `ray-ctrl-c` (the driver stopped mid-trial, then
the command rerun), on a loopback cluster started the way tests/test_faults_ray.py starts it (its
search: 2 trials of 5 epochs at once, one CPU each).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "cli.py")]
EPOCHS, TRIALS = 4, 3
POLL_S = 0.05


def _space(tmp: Path) -> Path:
    data = yaml.safe_load((ROOT / "tests" / "data" / "tiny_space.yaml").read_text())
    data["proxy"]["epochs"], data["search"]["trials"], data["search"]["sampler"] = EPOCHS, TRIALS, "random"
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _command(space: Path, run_dir: Path) -> list[str]:
    return [*CLI, "search", str(space), "--out", str(run_dir), "--study", "tiny", "--quiet", "--json"]


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def _completed(run_dir: Path) -> dict[str, float]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal")))
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    return {json.dumps(t.params, sort_keys=True): t.value for t in trials if t.state.name == "COMPLETE"}


def _epoch(folder: Path) -> int:
    try:
        return json.loads((folder / "checkpoint.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _run_until_killed(command: list[str], run_dir: Path, epoch: int) -> tuple[float, Path]:
    """Run `command` and SIGKILL it once the first searched trial has checkpointed `epoch`."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        folders = sorted((run_dir / "trials").glob("0*"))[1:] if (run_dir / "trials").is_dir() else []
        if folders and _epoch(folders[0]) >= epoch:
            break
        if process.poll() is not None:
            raise RuntimeError("the search ended before the fault could be injected")
        time.sleep(POLL_S)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return time.perf_counter() - start, folders[0]


def kill(space: Path, run_dir: Path, reference: Path) -> float:
    command = _command(space, run_dir)
    before, _ = _run_until_killed(command, run_dir, epoch=1)
    return before + _timed(command)


def damaged_checkpoint(space: Path, run_dir: Path, reference: Path) -> float:
    command = _command(space, run_dir)
    before, folder = _run_until_killed(command, run_dir, epoch=2)
    weights = folder / json.loads((folder / "checkpoint.json").read_text())["model"]
    with weights.open("r+b") as f:
        f.seek(weights.stat().st_size // 2)
        f.write(os.urandom(64))
    return before + _timed(command)


def torn_journal(space: Path, run_dir: Path, reference: Path) -> float:
    shutil.copytree(reference, run_dir)
    journal = run_dir / "study.journal"
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(data[:last + (len(data) - last) // 2])
    return _timed(_command(space, run_dir))  # the search itself was done: all of this is recovery


CASES = {"kill": kill, "damaged-checkpoint": damaged_checkpoint, "torn-journal": torn_journal}


def ray_cases(repeats: int) -> None:
    """The Ray driver stopped mid-trial (SIGKILL, SIGINT) and rerun, against an uninterrupted search."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_faults_ray as ray_faults  # the loopback cluster and the mid-trial stop the tests use

    clusters: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            cluster = ray_faults._cluster(clusters, "open", tmp)
            data = yaml.safe_load(ray_faults.TINY.read_text())
            data["proxy"]["epochs"] = ray_faults.EPOCHS
            space = tmp / "space.yaml"
            space.write_text(yaml.safe_dump(data))
            env = {**os.environ, **ray_faults.RAY_ENV, "HOME": str(ray_faults._home(tmp, None))}
            plain, extra = [], {"ray-kill": [], "ray-ctrl-c": []}
            for round_ in range(repeats):
                start = time.perf_counter()
                subprocess.run(ray_faults._command(space, cluster, tmp / f"plain-{round_}"), env=env, check=True,
                               capture_output=True)
                plain.append(time.perf_counter() - start)
                for name, sig in (("ray-kill", signal.SIGKILL), ("ray-ctrl-c", signal.SIGINT)):
                    run_dir = tmp / f"{name}-{round_}"
                    command = ray_faults._command(space, cluster, run_dir)
                    start = time.perf_counter()
                    ray_faults._stop_mid_trial(command, env, run_dir, sig)
                    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
                    if rerun.returncode != 0:
                        raise SystemExit(f"{name}: the rerun failed:\n{rerun.stderr[-3000:]}")
                    extra[name].append(time.perf_counter() - start - plain[-1])
                    if _completed(run_dir) != _completed(tmp / f"plain-{round_}"):
                        raise SystemExit(f"{name}: the recovered search differs from the uninterrupted one")
        finally:
            for cluster in clusters.values():
                for pid in ray_faults._alive(ray_faults._tree(cluster.process.pid)):
                    os.kill(pid, signal.SIGKILL)
                shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    _print("uninterrupted Ray search", plain, extra)


def _print(what: str, plain: list[float], extra: dict[str, list[float]]) -> None:
    print(f"{what}: median {statistics.median(plain):.1f} s over {len(plain)} runs")
    for name, values in extra.items():
        print(f"{name:20s} recovery cost: median {statistics.median(values):5.1f} s  "
              f"(runs: {', '.join(f'{v:.1f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray", action="store_true", help="also the Ray driver's faults (a loopback cluster)")
    args = parser.parse_args()
    extra: dict[str, list[float]] = {name: [] for name in CASES}
    plain: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        space = _space(tmp)
        for round_ in range(args.repeats):
            reference = tmp / f"reference-{round_}"
            plain.append(_timed(_command(space, reference)))
            for name, case in CASES.items():
                run_dir = tmp / f"{name}-{round_}"
                total = case(space, run_dir, reference)
                if _completed(run_dir) != _completed(reference):
                    raise SystemExit(f"{name}: the recovered search differs from the uninterrupted one")
                extra[name].append(total if name == "torn-journal" else total - plain[-1])
    _print("uninterrupted search", plain, extra)
    if args.ray:
        ray_cases(args.repeats)


if __name__ == "__main__":
    main()
