"""Ramp (and architecture) search under a FLOPs budget.

The seams: `space` (what to search, from YAML, with its typed proxy/search/retrain settings;
candidates and their budget; how a ramp becomes sampler parameters is rampsearch.parameterizations), `record`
(what a trial stores), `study` (where trials live: storage, samplers, pruners, mending interrupted
trials), `methods` (how a candidate is scored: a proxy training, or on a supernet; one module per
method behind one protocol), `load` (a space, checked by its method; a run's space and study), `trial` (a trial's
folder and training config), `finalists` (what is retrained), the backends
(`optuna_backend`, `ray_backend`: how trials are scheduled; they import the seams, never each other)
and `results` (the run directory's files). A backend is a module with `run(space, space_file,
run_dir, options, progress)` returning the Optuna study that holds its trials; register it in BACKENDS.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import RunFailed, UserError, ensure_directory
from ..redact import redact, redact_command
from .options import SearchOptions
from .progress import Progress, counts
from .record import FAILED, INTERRUPTED, TrialRecord
from . import methods
from .load import load_space
from .results import Standing, standing, write_outputs
from .space import SearchSpace, check_budget
from .score import Score
from .distinct import covers
from .study import MAX_STALLED_PROPOSALS, interrupted_numbers, run_score, search_metadata, stalled_proposals

BACKENDS = {"optuna": "rampsearch.search.optuna_backend", "ray": "rampsearch.search.ray_backend"}


@dataclass
class SearchOutcome:
    run_dir: Path
    study: optuna.Study
    paths: dict[str, Path]
    counts: dict[str, Any]
    flops_range: tuple[int, int]
    seconds: float
    standing: Standing
    complete: str | None = None  # said when every distinct candidate the budget admits was scored

    def summary(self) -> dict[str, Any]:
        best = self.standing.best
        record = TrialRecord.of(best) if best is not None else None
        handset = self.standing.handset
        return {
            "run_dir": str(self.run_dir), "study": self.study.study_name, "counts": self.counts,
            "flops_range": list(self.flops_range), "seconds": round(self.seconds, 1),
            "files": {k: str(v) for k, v in self.paths.items()}, "score_metric": self.standing.score.metric,
            "best": None if best is None else {
                "trial": best.number, "score": best.values[0], "score_se": record.score_se, "flops": record.flops,
                "params": record.params, "ramp": list(record.ramp)},
            "handset": None if handset is None else {"trial": handset.number, "score": handset.values[0],
                                                     "score_se": TrialRecord.of(handset).score_se},
            "handset_scored_higher": self.standing.handset_scored_higher,
            "complete": self.complete,
            "note": self.standing.sentence(),
        }


def prepare_run_dir(space_file: Path, run_dir: Path, overrides: dict[str, Any]) -> None:
    """Create the run directory with a copy of the space; refuse to mix two spaces (or --set) in one."""
    ensure_directory(run_dir, "--out")
    copy = run_dir / "space.yaml"
    if copy.exists() and copy.read_text() != space_file.read_text():
        raise UserError(f"{run_dir} holds a search of a different space ({copy} differs from {space_file}); "
                        "use another --out, or delete the directory to start over")
    earlier = search_metadata(run_dir).get("set", {})
    if copy.exists() and earlier != overrides:
        raise UserError(f"{run_dir} was searched with --set {earlier or '(none)'}, not {overrides or '(none)'}; "
                        "rerun with the same --set values, or use another --out")
    if not copy.exists():
        shutil.copyfile(space_file, copy)


def write_metadata(run_dir: Path, options: SearchOptions, backend: str, space: SearchSpace) -> None:
    import torch

    meta = search_metadata(run_dir)
    meta |= {"command": redact_command(sys.argv), "backend": backend, "study": options.study,
             "score": space.search.score,
             "storage": redact(options.storage) or "study.journal",
             "storage_kind": "rdb" if options.storage else "journal",
             "set": options.overrides, "method": options.method, "supernet": options.supernet,
             "search_split": _search_split(space), "python": platform.python_version(), "torch": torch.__version__,
             "optuna": optuna.__version__, "platform": platform.platform()}
    meta.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    (run_dir / "search.json").write_text(json.dumps(meta, indent=2))


def preflight(space: SearchSpace, options: SearchOptions) -> None:
    """Check, once before the first trial, what would make every trial fail: device, recipe, data, memory
    (and for one-shot, a --supernet folder that does not fit the space); `options`: as given
    (SearchMethod.preflight)."""
    methods.of_run(space, options).preflight(space, options)


def _with_method(space: SearchSpace, options: SearchOptions) -> SearchOptions:
    """`options` with its method resolved: --method, else the space's."""
    return dataclasses.replace(options, method=options.method or space.method)


def _search_split(space: SearchSpace) -> dict[str, Any]:
    """The held-out share of the training data that scores candidates, and its seed (rampsearch.data)."""
    recipe = space.proxy_recipe()
    return {"share": recipe.search_split, "seed": recipe.split_seed}


class SearchShortfall(RunFailed):
    """The search ran but did not reach its goal; its outputs are written and `outcome` describes them."""

    def __init__(self, message: str, outcome: "SearchOutcome") -> None:
        super().__init__(message)
        self.outcome = outcome


def _failure(trials: list[FrozenTrial]) -> str:
    """Why a search completed no trial, from its trials' records."""
    records = [TrialRecord.of(t) for t in trials]
    reasons = [r.reason for r in records if r.status in (FAILED, INTERRUPTED) and r.reason]
    rejected = sum(r.rejected for r in records)
    if reasons:
        return f"no trial completed; {len(reasons)} failed, the first with: {redact(reasons[0])}"
    if rejected:
        return (f"no trial completed: the sampler proposed {rejected} candidates that were over budget or already "
                "trained; loosen the budget")
    return "no trial completed (every trained trial was pruned); lower the pruner's aggressiveness or add trials"


def _shortfall(trials: list[FrozenTrial], wanted: int, shared: bool, complete: bool = False) -> str | None:
    """Why the search fell short of its goal, or None if it reached it.

    The goal: `wanted` trials trained to a verdict (complete, or pruned by the pruner), or fewer when
    they are every candidate the budget admits (`complete`), none failed, none left unfinished by
    this process, and the hand-set baseline complete. In a study shared through a database
    (`shared`), trials other processes are still training count as theirs.
    """
    interrupted = interrupted_numbers(trials)
    records = {t.number: TrialRecord.of(t) for t in trials}
    trained = [t for t in trials if not records[t.number].rejected]
    finished = [t for t in trained if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [t for t in trained if t.state == TrialState.FAIL and t.number not in interrupted]
    running = [t.number for t in trained if t.state == TrialState.RUNNING]
    unfinished = [] if shared else running
    handset = [t for t in trained if records[t.number].handset]
    problems = []
    if failed:
        first = failed[0]
        problems.append(f"{len(failed)} trial(s) failed (trial {first.number}: "
                        f"{redact(records[first.number].reason or 'no reason recorded')})")
    if unfinished:
        problems.append(f"trial(s) {unfinished} did not finish; rerun the same command to resume them from their "
                        "checkpoints")
    elif len(finished) + len(running) < wanted and not complete:
        problems.append(f"only {len(finished)} of {wanted} trials finished"
                        + (f"; the sampler's last {MAX_STALLED_PROPOSALS} proposals were over budget or repeats of "
                           "scored candidates: widen ramp.range, add knots, loosen the budget, or try another "
                           "sampler (random explores where TPE exploits)"
                           if stalled_proposals(trials) >= MAX_STALLED_PROPOSALS else ""))
    if not any(t.state == TrialState.COMPLETE or t.number in running for t in handset):
        problems.append("the hand-set baseline did not complete, so nothing can be judged against it")
    return "; ".join(problems) or None


def run_search(space_file: str | Path, run_dir: str | Path, options: SearchOptions, backend: str = "optuna",
               show_progress: bool = True, log: Callable[[str], None] = print) -> SearchOutcome:
    """Validate the space, its budget and what every trial needs; run (or resume) the search; write its files.

    Raises UserError (bad input, before anything trains), RunFailed (no trial completed) or
    SearchShortfall (the search fell short of its goal; its outputs are written first).
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials.csv and our progress say what matters, no tracebacks
    space_file, run_dir = Path(space_file), Path(run_dir)
    space = load_space(space_file, options.overrides)
    resumed = run_score(run_dir)
    if resumed is not None and resumed != space.search.score:
        log(f"resuming a search that ranks by {Score(resumed).short} (its study was created so), not by the "
            f"space's {space.score.short}")
        space = space.with_score(resumed)
    given = _with_method(space, options)
    method = methods.get(given.method)
    if given.method != space.method:  # --method: load_space checked the space by the space's own method
        method.check_space(space)
    options = method.resolve(given, run_dir)  # e.g. one-shot: RUN_DIR/supernet when --supernet is not given
    low, high, warning = check_budget(space)
    preflight(space, given)
    budget = f"budget {space.budget.gflops} GFLOPs" if space.budget.gflops else "no FLOPs budget"
    log(f"space {space.name}: candidates span {low / 1e9:.4g}-{high / 1e9:.4g} GFLOPs at {space.img_size}px; "
        f"{budget}; {method.plan(space, options.trials)}")
    grid = space.grid()
    log(f"ranked by {space.score.label} (search.score); " + (
        f"the budget admits {len(grid)} distinct candidates: the search stops early, complete, if it scores them all"
        if grid is not None else "too many distinct candidates to list; repeats are redrawn or answered from the "
                                 "earlier trial"))
    if warning:
        log(f"warning: {warning}")
    prepare_run_dir(space_file, run_dir, options.overrides)
    write_metadata(run_dir, options, backend, space)
    start = time.perf_counter()
    method.prepare(space, options, run_dir, show_progress, log)
    progress = Progress(options.trials, enabled=show_progress, score=space.score)
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
    trials = study.get_trials(deepcopy=False)
    complete = (f"complete: every one of the {len(grid)} distinct candidates within budget was scored"
                if grid is not None and covers(trials, grid) else None)
    outcome = SearchOutcome(run_dir, study, paths, counts(trials, space.score), (low, high),
                            time.perf_counter() - start, standing(study), complete)
    if outcome.counts["done"] == 0:
        raise RunFailed(f"search {run_dir}: {_failure(trials)} (trials.csv has every trial's reason)")
    if complete:
        log(f"search {complete}")
    shortfall = _shortfall(trials, options.trials, shared=bool(options.storage), complete=complete is not None)
    if shortfall:
        raise SearchShortfall(f"search {run_dir} fell short: {shortfall} (trials.csv has every trial's "
                              "record; the results so far are written)", outcome)
    return outcome


__all__ = ["BACKENDS", "SearchOptions", "SearchOutcome", "SearchShortfall", "SearchSpace", "load_space", "preflight", "run_search"]
