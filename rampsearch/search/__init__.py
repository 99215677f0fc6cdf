"""Ramp (and architecture) search under a FLOPs budget.

The seams: `space` (what to search, from YAML; candidates and their budget), `parameterizations`
(how a ramp becomes sampler parameters), `trial` (one proxy training through `train.fit`), the
backends (`optuna_backend`, `ray_backend`: how trials are scheduled) and `results` (the run
directory's files). A backend is a module with `run(space, space_file, run_dir, options, progress)`
returning the Optuna study that holds its trials; register it in BACKENDS.
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import optuna

from ..errors import UserError
from .options import SearchOptions
from .progress import Progress, counts
from .results import best_trial, redact_url, write_outputs
from .space import SearchSpace, check_budget, load_space

BACKENDS = {"optuna": "rampsearch.search.optuna_backend", "ray": "rampsearch.search.ray_backend"}


@dataclass
class SearchOutcome:
    run_dir: Path
    study: optuna.Study
    paths: dict[str, Path]
    counts: dict[str, Any]
    flops_range: tuple[int, int]
    seconds: float

    def summary(self) -> dict[str, Any]:
        best = best_trial(self.study)
        return {
            "run_dir": str(self.run_dir), "study": self.study.study_name, "counts": self.counts,
            "flops_range": list(self.flops_range), "seconds": round(self.seconds, 1),
            "files": {k: str(v) for k, v in self.paths.items()},
            "best": None if best is None else {
                "trial": best.number, "accuracy": best.values[0], "flops": best.user_attrs["flops"],
                "params": best.user_attrs["params"], "ramp": best.user_attrs["ramp"],
                "baseline": bool(best.user_attrs.get("baseline"))},
        }


def prepare_run_dir(space_file: Path, run_dir: Path) -> None:
    """Create the run directory with a copy of the space; refuse to mix two spaces in one directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    copy = run_dir / "space.yaml"
    if copy.exists() and copy.read_text() != space_file.read_text():
        raise UserError(f"{run_dir} holds a search of a different space ({copy} differs from {space_file}); "
                        "use another --out, or delete the directory to start over")
    if not copy.exists():
        shutil.copyfile(space_file, copy)


def write_metadata(run_dir: Path, options: SearchOptions, backend: str) -> None:
    import torch

    old = run_dir / "search.json"
    meta = json.loads(old.read_text()) if old.exists() else {}
    meta |= {"command": [redact_url(a) if "://" in a else a for a in sys.argv], "backend": backend,
            "study": options.study, "storage": redact_url(options.storage) or "study.journal",
            "storage_kind": "rdb" if options.storage else "journal",
            "python": platform.python_version(), "torch": torch.__version__, "optuna": optuna.__version__,
            "platform": platform.platform()}
    meta.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    (run_dir / "search.json").write_text(json.dumps(meta, indent=2))


def run_search(space_file: str | Path, run_dir: str | Path, options: SearchOptions, backend: str = "optuna",
               show_progress: bool = True, log=print) -> SearchOutcome:
    """Validate the space and its budget, run (or resume) the search, write the run directory's files."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line says what matters
    space_file, run_dir = Path(space_file), Path(run_dir)
    space = load_space(space_file)
    low, high, warning = check_budget(space)
    budget = f"budget {space.budget.gflops} GFLOPs" if space.budget.gflops else "no FLOPs budget"
    log(f"space {space.name}: candidates span {low / 1e9:.4g}-{high / 1e9:.4g} GFLOPs at {space.img_size}px; {budget}")
    if warning:
        log(f"warning: {warning}")
    prepare_run_dir(space_file, run_dir)
    write_metadata(run_dir, options, backend)
    start = time.perf_counter()
    progress = Progress(options.trials, enabled=show_progress)
    try:
        study = import_module(BACKENDS[backend]).run(space, space_file, run_dir, options, progress)
        progress.update(study.get_trials(deepcopy=False))
    finally:
        progress.close()
    paths = write_outputs(study, space, run_dir)
    meta_file = run_dir / "search.json"
    meta = json.loads(meta_file.read_text())
    meta["seconds"] = round(meta.get("seconds", 0) + time.perf_counter() - start, 1)  # summed over resumes
    meta_file.write_text(json.dumps(meta, indent=2))
    return SearchOutcome(run_dir, study, paths, counts(study.get_trials(deepcopy=False)), (low, high),
                         time.perf_counter() - start)


__all__ = ["BACKENDS", "SearchOptions", "SearchOutcome", "SearchSpace", "load_space", "run_search"]
