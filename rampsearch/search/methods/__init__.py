"""How a search scores candidates: one module per method, each a `SearchMethod`, found by name.

A method prepares once per search (one-shot: trains the supernet), evaluates one candidate at a
time, says how the best searched schedules are re-scored before retraining, and gives the words the
log and the report use for it (the protocol: rampsearch.search.methods.protocol). The backends, the
finalists and the report ask the method named by the run; none of them names a method.

Adding a method is one new module in this package, defining a `SearchMethod` as `METHOD`, plus one
line in `BUILT_IN` (`register` adds one at run time, as tests/test_search_methods.py does). The
registry loads a method's module on first use, so a method's dependencies (e.g. torch) load with it.

A space names its method; the space module parses it without knowing which methods exist (every
method module reads spaces, so the space cannot import them). `checked` completes a parsed space:
its `method:` is checked against the registry, the method checks the space, and a space without
`search.score` ranks by its method's `default_score` (rampsearch.search.load does this for every
space and run it loads).
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from ..options import SearchOptions
from ..record import ONE_SHOT, TRAIN
from ..space import Candidate, SearchSpace, SpaceError
from .protocol import Finalist, Pool, Report, SearchMethod, Words, model_of

# name -> the module whose METHOD it is (full names: tests/test_layers.py counts these loads as imports)
BUILT_IN = {TRAIN: "rampsearch.search.methods.proxy", ONE_SHOT: "rampsearch.search.methods.one_shot"}

_LOADED: dict[str, SearchMethod] = {}


def names() -> tuple[str, ...]:
    """Every method's name, the built-in ones first."""
    return (*BUILT_IN, *(name for name in _LOADED if name not in BUILT_IN))


def get(name: str) -> SearchMethod:
    """The method called `name` (KeyError if there is none: `checked` and the CLI validate names first)."""
    if name not in _LOADED:
        _LOADED[name] = import_module(BUILT_IN[name]).METHOD
    return _LOADED[name]


def of_run(space: SearchSpace, options: SearchOptions) -> SearchMethod:
    """The method a search scores with: `options.method` (--method), else the space's `method`."""
    return get(options.method or space.method)


def evaluate_candidate(space: SearchSpace, candidate: Candidate, run_dir: Path, folder: int, options: SearchOptions,
                       report: Report | None) -> dict[str, Any]:
    """Score a candidate by the run's method, in trial folder `folder` (a retry keeps its original's number).
    Returns the final metrics, `history` and `seconds`; `report(epoch, metrics)` may raise to stop it."""
    return of_run(space, options).evaluate(space, candidate, run_dir, folder, options, report)


def checked(space: SearchSpace) -> SearchSpace:
    """`space` checked by its method, ranking by the method's `default_score` unless `search.score` says."""
    if space.method not in names():
        raise SpaceError(f"{space.source}: method: {space.method!r} is not one of {list(names())}")
    method = get(space.method)
    if space.search.score is None:
        space = space.with_score(method.default_score)
    method.check_space(space)
    return space


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


__all__ = ["BUILT_IN", "Finalist", "Pool", "Report", "SearchMethod", "Words", "checked", "evaluate_candidate", "get",
           "model_of", "names", "of_run", "register", "unregister"]
