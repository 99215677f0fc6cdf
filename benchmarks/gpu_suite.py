"""The GPU suite: every path of rampsearch on a CUDA device, in one call, with its numbers and logs.

A session that is lent a GPU has minutes, so everything it runs is here and already works: `--smoke`
runs the same steps on the CPU at tiny sizes (about 3 minutes on 2 cores), and CI runs the smoke
(.ci/run), so the suite cannot rot between GPU sessions.

    .venv/bin/python benchmarks/gpu_suite.py --download-wheels .whl  # here, before a GPU session
    python3 benchmarks/gpu_suite.py --wheels .whl .whl-1 --out "$OUT"   # on the GPU machine
    python3 benchmarks/gpu_suite.py --wheels .whl .whl-1 --only tests train torchrun search --out "$OUT"
    .venv/bin/python benchmarks/gpu_suite.py --smoke --out runs/gpu-smoke     # here, and in CI

Carrying the wheels: a device call carries at most 64 MiB, and Ray's wheel alone is 79 MB. So
`--download-wheels DIR` cuts every wheel over CARRY_PART_MIB into parts, the first in DIR and the
k-th in DIR-k (add them to .git/info/exclude). Carry DIR in one call (its command can be `true`),
then DIR-1 in the next call right after (the machine keeps the first call's ignored files while it is
warm, 30 s): `--wheels DIR DIR-1` joins the parts and installs.

A device call runs 10 minutes at most; if the whole suite does not fit one, `--only STEP...` splits it
(e.g. tests, train, torchrun and search in one call; demo, throughput, packing and data in the next).

Steps (each a subprocess with a time limit; a failing step is recorded and the next one runs):

1. install: the packages the GPU image lacks (optuna, ray[tune], fvcore and their needs) from the
   wheels carried in `--wheels`, into a folder put on PYTHONPATH for every later step;
2. tests: the device-independent tests with RAMPSEARCH_TEST_DEVICE=cuda (tests/devices.py);
3. train: `rampsearch train` of nano at 64 px, bf16 autocast on CUDA; and `torchrun --nproc_per_node 1`
   of the same (NCCL);
4. search-optuna, search-ray: a proxy-training search of the demo space with each backend (Ray with
   `--gpus-per-trial 0.25`: four trials share the GPU);
5. demo: `rampsearch run` of the one-shot demo (supernet, one-shot scoring, retraining, report): its
   wall time on the GPU;
6. throughput: iFormer-S at 224 (batch 64/128/256) and nano at 64, bf16, eager and compiled: img/s and
   the fraction of the measured bf16 matmul peak (MFU), with a profile of the top operators
   (benchmarks/train_step.py);
7. packing: 1, 2 and 4 nano proxy trials at once on one GPU: trials per hour in all and peak memory each;
8. data: the image-folder data path with and without the decoded proxy cache (benchmarks/data_path.py).

Output (`--out`, default runs/gpu-suite): gpu_suite.json (per step: command, exit status, seconds, and
the numbers it printed as JSON) and logs.tar.gz (every step's log): two files, within what a device
call brings back. Exit status 0 only when every step passed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What the GPU image lacks, as the device tool's notes on the lent machine list its packages: the
# import name and the distributions `--download-wheels` fetches for it (Python 3.12, manylinux x86-64).
MISSING_ON_GPU = {
    "optuna": ["optuna==5.0.0", "alembic", "sqlalchemy", "mako", "colorlog", "greenlet"],
    "fvcore": ["fvcore==0.1.5.post20221221", "iopath", "yacs", "termcolor"],
    "ray": ["ray==2.60.0", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "tensorboardX"],
}
SITE = Path("/tmp/rampsearch-site")  # where carried wheels are installed on the GPU machine
STEPS = ("tests", "train", "torchrun", "search", "search-optuna", "search-ray", "demo", "throughput", "packing", "data")
CARRY_PART_MIB = 40  # wheels are cut into parts of this size: each call's carry stays under 64 MiB
# Tests that train or score on TEST_DEVICE (tests/devices.py); the rest never touch a device.
DEVICE_TESTS = ["tests/test_train.py", "tests/test_supernet.py", "tests/test_data_cache.py",
                "tests/test_search_split.py", "tests/test_power_and_seeds.py", "tests/test_model.py"]


@dataclass
class Sizes:
    """How big each step is: the GPU run's, or the smoke's (tiny, on the CPU)."""

    device: str
    space: str  # a proxy-training space for the searches
    one_shot_space: str  # the space `rampsearch run` runs
    trials: int
    train_args: list[str]
    tests: list[str]
    test_filter: str
    throughput_args: list[str]
    packing: list[int]
    data_args: list[str]
    run_args: list[str] = field(default_factory=list)
    limit: int = 600  # seconds per step


GPU = Sizes(device="cuda", space="search_spaces/demo.yaml", one_shot_space="search_spaces/demo_one_shot.yaml",
            trials=8, train_args=["--variant", "nano", "--img-size", "64", "--epochs", "3"],
            tests=DEVICE_TESTS, test_filter="",
            throughput_args=["--cases", "small", "nano", "--batches", "64", "128", "256", "--precisions", "bf16",
                             "--profile"],
            packing=[1, 2, 4], data_args=["--images", "2000", "--epochs", "3", "--seeds", "2"])
SMOKE = Sizes(device="cpu", space="tests/data/tiny_space.yaml", one_shot_space="tests/data/tiny_space.yaml",
              trials=2, train_args=["--variant", "nano", "--img-size", "32", "--epochs", "1",
                                    "--set", "synthetic_train_per_class=8", "--set", "synthetic_val_per_class=4",
                                    "--set", "batch_size=16"],
              # one test that trains on TEST_DEVICE: the step's wiring (CI runs the whole suite just before)
              tests=["tests/test_data_cache.py"], test_filter="training_on_a_cached_folder",
              throughput_args=["--cases", "nano", "--img-size", "32", "--batches", "8", "--precisions", "fp32",
                               "--no-compile", "--steps", "1", "--warmup", "1"],
              packing=[1], data_args=["--images", "120", "--epochs", "1", "--seeds", "1", "--repeats", "1",
                                      "--img-size", "32"],
              run_args=["--method", "one-shot", "--trials", "2", "--seeds", "1", "--set", "synthetic_val_per_class=4"],
              limit=300)


@dataclass
class Step:
    name: str
    command: list[str]
    status: int | None = None
    seconds: float = 0.0
    results: object = None


class Suite:
    """Runs the steps in order, each logged to out/logs/NAME.log, and keeps what they report."""

    def __init__(self, out: Path, sizes: Sizes, env: dict[str, str], only: list[str]) -> None:
        self.out, self.sizes, self.env, self.only, self.steps = out, sizes, env, only, []
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, command: list[str], parse_json: bool = False,
            env: dict[str, str] | None = None) -> Step | None:
        """Run step `name` (unless --only leaves it out: then None)."""
        if self.only and not any(name == o or name.startswith(o + "-") for o in self.only):
            return None
        step = Step(name, command)
        log_file = self.out / "logs" / f"{name}.log"
        print(f"[{name}] {shlex.join(command)}", flush=True)
        started = time.perf_counter()
        with log_file.open("w") as log:
            try:
                done = subprocess.run(command, cwd=REPO, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                      stderr=log, text=True, timeout=self.sizes.limit)
                step.status, stdout = done.returncode, done.stdout
            except subprocess.TimeoutExpired as exc:
                step.status, stdout = 124, exc.stdout or ""
                stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            log.write("\n--- stdout ---\n" + stdout)
        step.seconds = round(time.perf_counter() - started, 1)
        if parse_json and step.status == 0:
            step.results = _last_json(stdout)
        print(f"[{name}] exit {step.status} in {step.seconds} s", flush=True)
        self.steps.append(step)
        return step

    def write(self, facts: dict) -> Path:
        summary = {**facts, "steps": [vars(s) for s in self.steps],
                   "passed": all(s.status == 0 for s in self.steps)}
        path = self.out / "gpu_suite.json"
        path.write_text(json.dumps(summary, indent=1, default=str))
        with tarfile.open(self.out / "logs.tar.gz", "w:gz") as tar:
            tar.add(self.out / "logs", arcname="logs")
        return path


def _last_json(text: str):
    """The JSON value a step printed last: a whole-stdout document, else the last line that parses."""
    try:
        return json.loads(text)
    except ValueError:
        for line in reversed(text.strip().splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def install(wheels: list[Path]) -> dict[str, str]:
    """Install carried wheels for what is missing (joining cut ones); the environment later steps run in."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    missing = [name for name in MISSING_ON_GPU if importlib.util.find_spec(name) is None]
    if missing and not wheels:
        raise SystemExit(f"missing packages {missing}: pass --wheels DIR... with their wheels (--download-wheels DIR "
                         "fetches them where pip can reach PyPI)")
    if missing:
        files = sorted(str(p) for folder in wheels for p in folder.glob("*.whl")) + _joined(wheels)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(SITE), *files], check=True)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), str(REPO), env.get("PYTHONPATH")]))
    else:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _joined(folders: list[Path]) -> list[str]:
    """Wheels cut by `download_wheels`, put back together in /tmp (NAME.whl.part-K across the folders)."""
    parts: dict[str, list[Path]] = {}
    for folder in folders:
        for part in folder.glob("*.whl.part-*"):
            parts.setdefault(part.name.rsplit(".part-", 1)[0], []).append(part)
    joined = []
    for name, pieces in parts.items():
        target = Path("/tmp") / name
        with target.open("wb") as out:
            for piece in sorted(pieces, key=lambda p: p.name):
                out.write(piece.read_bytes())
        joined.append(str(target))
    return joined


def download_wheels(folder: Path) -> None:
    """Fetch the wheels the GPU image lacks (Python 3.12, manylinux x86-64) into `folder`."""
    platforms = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64",
                                                                                        "manylinux1_x86_64"]
    names = [name for names in MISSING_ON_GPU.values() for name in names]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", "-d", str(folder), *[a for p in platforms for a in ("--platform", p)]]
    for name in names:  # one at a time: a pure-Python sdist-only package fails alone, and is retried as any
        if subprocess.run(command + [name]).returncode:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(folder), name], check=True)
    limit = CARRY_PART_MIB * 2**20
    for wheel in [w for w in folder.glob("*.whl") if w.stat().st_size > limit]:
        data = wheel.read_bytes()
        for k in range(0, -(-len(data) // limit)):
            target = folder if k == 0 else folder.with_name(f"{folder.name}-{k}")
            target.mkdir(exist_ok=True)
            (target / f"{wheel.name}.part-{k:02d}").write_bytes(data[k * limit:(k + 1) * limit])
        wheel.unlink()
    for target in [folder, *sorted(folder.parent.glob(f"{folder.name}-[0-9]*"))]:
        size = sum(p.stat().st_size for p in target.glob("*")) / 2**20
        print(f"{target}: {len(list(target.glob('*')))} files, {size:.1f} MiB (carry each in its own device call)")


def run_suite(sizes: Sizes, out: Path, env: dict[str, str], only: list[str]) -> bool:
    py, cli, device = sys.executable, [sys.executable, "cli.py"], sizes.device
    suite = Suite(out, sizes, env, only)
    runs = out / "runs"
    facts = {"date": time.strftime("%Y-%m-%d %H:%M"), "smoke": sizes is SMOKE, "python": platform.python_version()}
    probe = subprocess.run([py, "-c", "import json, torch; print(json.dumps({'torch': torch.__version__, "
                            "'cuda': torch.cuda.is_available() and torch.cuda.get_device_name(0)}))"],
                           env=env, capture_output=True, text=True)
    facts.update(_last_json(probe.stdout) or {"probe": probe.stderr[-2000:]})
    test_args = ["-k", sizes.test_filter] if sizes.test_filter else []
    suite.run("tests", [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *sizes.tests, *test_args],
              env={"RAMPSEARCH_TEST_DEVICE": device})
    suite.run("train", [*cli, "train", *sizes.train_args, "--device", device, "--quiet", "--json",
                        "--out", str(runs / "train")], parse_json=True)
    suite.run("torchrun", [py, "-m", "torch.distributed.run", "--nproc_per_node", "1", "cli.py", "train",
                           *sizes.train_args, "--device", device, "--quiet", "--json", "--out", str(runs / "ddp")],
              parse_json=True)
    for backend, extra in (("optuna", []), ("ray", ["--gpus-per-trial", "0.25"] if device == "cuda" else [])):
        suite.run(f"search-{backend}", [*cli, "search", sizes.space, "--backend", backend, "--trials",
                                        str(sizes.trials), "--device", device, "--quiet", "--json",
                                        "--out", str(runs / f"search-{backend}"), *extra], parse_json=True)
    suite.run("demo", [*cli, "run", sizes.one_shot_space, "--device", device, "--quiet", "--json",
                       "--out", str(runs / "demo"), "--report-out", str(runs / "demo-report"), *sizes.run_args],
              parse_json=True)
    suite.run("throughput", [py, "benchmarks/train_step.py", "--device", device, "--json", *sizes.throughput_args],
              parse_json=True)
    for count in sizes.packing:
        suite.run(f"packing-{count}", [py, "benchmarks/gpu_suite.py", "--pack", str(count), "--device", device,
                                       "--out", str(runs / f"pack-{count}"), *(["--smoke"] if sizes is SMOKE else [])],
                  parse_json=True)
    suite.run("data", [py, "benchmarks/data_path.py", "--device", device, "--work", str(runs / "data"),
                       *sizes.data_args], parse_json=True)
    path = suite.write(facts)
    failed = [s.name for s in suite.steps if s.status != 0]
    print(f"wrote {path} and {out / 'logs.tar.gz'}; " + (f"FAILED: {', '.join(failed)}" if failed else "all passed"))
    return not failed


def pack(count: int, device: str, out: Path, smoke: bool) -> None:
    """`count` nano proxy trials at once on one device: trials per hour in all, and each one's peak memory."""
    sizes = SMOKE if smoke else GPU
    started = time.perf_counter()
    children = [subprocess.Popen([sys.executable, "cli.py", "train", *sizes.train_args, "--seed", str(i),
                                  "--device", device, "--quiet", "--json", "--out", str(out / f"trial-{i}")],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True) for i in range(count)]
    results = [_last_json(child.communicate()[0]) for child in children]
    seconds = time.perf_counter() - started
    if any(child.returncode for child in children):
        raise SystemExit(f"a packed trial failed: exit statuses {[c.returncode for c in children]}")
    print(json.dumps({"trials": count, "seconds": round(seconds, 1), "trials_per_hour": round(3600 * count / seconds, 1),
                      "trial_seconds": [r and r.get("seconds") for r in results]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Steps and output: see the module docstring.")
    parser.add_argument("--smoke", action="store_true", help="the same steps on the CPU at tiny sizes (~3 min)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "runs" / "gpu-suite"))
    parser.add_argument("--wheels", type=Path, nargs="+", default=[],
                        help="folders of wheels (and cut parts) for what the GPU image lacks")
    parser.add_argument("--download-wheels", type=Path, metavar="DIR", help="fetch those wheels into DIR and exit")
    parser.add_argument("--only", nargs="+", default=[], metavar="STEP", choices=STEPS,
                        help="run these steps only (e.g. to split the suite over two device calls of 10 minutes)")
    parser.add_argument("--pack", type=int, help=argparse.SUPPRESS)  # the packing step's own worker
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.download_wheels:
        download_wheels(args.download_wheels)
        return
    if args.pack:
        pack(args.pack, args.device, args.out, args.smoke)
        return
    env = install(args.wheels)
    sys.exit(0 if run_suite(SMOKE if args.smoke else GPU, args.out, env, args.only) else 1)


if __name__ == "__main__":
    main()
