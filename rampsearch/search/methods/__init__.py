"""How a search scores candidates: one module per method, each a `SearchMethod`, found by name.

A method prepares once per search (one-shot: trains the supernet), evaluates one candidate at a
time, says how the best searched schedules are re-scored before retraining, and gives the words the
log and the report use for it. The trial runner (rampsearch.search.trial), both backends, the
finalists and the report ask the method named by the run; none of them names a method.

Adding a method is one new module in this package, defining a `SearchMethod` as `METHOD`, plus one
line in `BUILT_IN` (`register` adds one at run time, as tests/test_search_methods.py does). The
registry names modules and loads each on first use: the search space validates `method:` against
`names()` and asks its method to check the space, while every method module reads spaces, so a
method is loaded only when asked for (and its dependencies, e.g. torch, with it).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..record import ONE_SHOT, TRAIN

if TYPE_CHECKING:  # annotations only: the modules below import this registry
    import optuna

    from ..finalists import Finalist
    from ..options import SearchOptions
    from ..space import Candidate, RetrainSettings, SearchSpace

Report = Callable[[int, dict[str, float]], None]  # (epoch, metrics); may raise to stop the trial
Pool = list[tuple["optuna.trial.FrozenTrial", Any]]  # the best distinct searched (trial, TrialRecord), ranked

BUILT_IN = {TRAIN: "proxy", ONE_SHOT: "one_shot"}  # name -> the module of this package whose METHOD it is
DEFAULT = TRAIN  # the method of a space without `method:`


@dataclass(frozen=True)
class Words:
    """What the report says about a method's scores (each fits the sentence it is used in)."""

    scored_by: str  # "Candidates were scored by {scored_by} on a held-out search split ..."
    score_is: str  # "{score.short} is {score_is}, the {score.label} the search ranked by"
    score_source: str  # "{score_source} {score.label} per trial" (capitalized)
    scores: str  # "Kendall τ between {scores} and the retraining ..."


class SearchMethod(Protocol):
    """One way of scoring candidates. Evaluation results are dicts of the final metrics (top1, top5,
    loss, and their standard errors `*_se` where measured), `history` (one row per epoch, each with
    `epoch`) and `seconds`."""

    name: str
    default_score: str  # what a space with this method ranks by unless `search.score` says (rampsearch.search.score)
    # True: `evaluate` reports every epoch through `report` and leaves a training checkpoint after each,
    # so a backend may stop it early and resume it. False: one result when it returns; nothing is stopped
    # early, and a worker is kept, with what the method loaded, for the next candidate.
    per_epoch: bool
    words: Words

    def check_space(self, space: SearchSpace) -> None:
        """Refuse (SpaceError, naming the key) a space this method cannot search; called when a space is parsed."""

    def resolve(self, options: SearchOptions, run_dir: Path) -> SearchOptions:
        """`options` completed for this method (e.g. where its files go); UserError for options it does not take."""

    def preflight(self, space: SearchSpace, options: SearchOptions) -> None:
        """Check, once before the first trial, what would make every trial fail (`options` as given)."""

    def plan(self, space: SearchSpace, trials: int) -> str:
        """The search's plan in words, for its first log line: e.g. "100 trials of 3 proxy epochs"."""

    def epochs(self, space: SearchSpace) -> int:
        """How many epochs a candidate's evaluation reports (the most a backend can judge it at)."""

    def prepare(self, space: SearchSpace, options: SearchOptions, run_dir: Path, show_progress: bool,
                log: Callable[[str], None]) -> None:
        """Once per search, before its first trial and after the run directory is written (resumable)."""

    def evaluate(self, space: SearchSpace, candidate: Candidate, run_dir: Path, folder: int, options: SearchOptions,
                 report: Report | None) -> dict[str, Any]:
        """Score one candidate; `folder`: its trial folder's number (a retry keeps its original's)."""

    def rescore(self, pool: Pool, space: SearchSpace, run_dir: Path, settings: RetrainSettings, supernet: str | None,
                device: str, log: Callable[[str], None]) -> tuple[list[Finalist], str | None]:
        """The pool as finalists, scored again against the winner's curse (rampsearch.search.finalists), and how
        the best compares with the runner-up; None instead when it was not re-scored (each `how` then says why)."""


_LOADED: dict[str, SearchMethod] = {}


def names() -> tuple[str, ...]:
    """Every method's name, the built-in ones first."""
    return (*BUILT_IN, *(name for name in _LOADED if name not in BUILT_IN))


def get(name: str) -> SearchMethod:
    """The method called `name` (KeyError if there is none: the space and the CLI validate names first)."""
    if name not in _LOADED:
        _LOADED[name] = import_module(f"{__name__}.{BUILT_IN[name]}").METHOD
    return _LOADED[name]


def of_run(space: SearchSpace, options: SearchOptions) -> SearchMethod:
    """The method a search scores with: `options.method` (--method), else the space's `method`."""
    return get(options.method or space.method)


def register(method: SearchMethod) -> None:
    """Make `method` available by its name (a space's `method:`, `--method`) until `unregister`."""
    if method.name in names():
        raise ValueError(f"a search method called {method.name!r} exists already")
    _LOADED[method.name] = method


def unregister(name: str) -> None:
    """Forget a method added by `register`."""
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in method")
    del _LOADED[name]
