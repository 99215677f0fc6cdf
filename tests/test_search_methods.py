"""The search-method seam (rampsearch.search.methods): a method added by `register` runs a whole search,
with no change anywhere else, and the built-in methods are found by name."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import pytest

from rampsearch.search import SearchOptions, methods, run_search
from rampsearch.search.record import DEFAULT_METHOD
from rampsearch.search.score import TOP1

TINY = Path(__file__).resolve().parent / "data" / "tiny_space.yaml"


class ByFlops:
    """Scores a candidate by its FLOPs alone (more is better): no training, no data, a few microseconds."""

    name = "flops-test"
    default_score = TOP1
    per_epoch = False
    words = methods.Words(scored_by="counting FLOPs", score_is="the schedule's GFLOPs",
                          score_source="FLOPs", scores="the FLOPs counts")

    def __init__(self) -> None:
        self.prepared = 0

    def check_space(self, space) -> None:
        pass

    def resolve(self, options: SearchOptions, run_dir: Path) -> SearchOptions:
        return options

    def preflight(self, space, options: SearchOptions) -> None:
        pass

    def plan(self, space, trials: int) -> str:
        return f"{trials} candidates scored by their FLOPs"

    def epochs(self, space) -> int:
        return 1

    def prepare(self, space, options: SearchOptions, run_dir: Path, show_progress: bool,
                log: Callable[[str], None]) -> None:
        self.prepared += 1

    def evaluate(self, space, candidate, run_dir: Path, folder: int, options: SearchOptions,
                 report) -> dict[str, Any]:
        row = {"epoch": 1, "top1": candidate.flops / 1e6, "top5": 100.0, "loss": 1.0}
        return {**row, "history": [row], "seconds": 0.0}

    def rescore(self, pool, space, run_dir: Path, settings, supernet: str | None, device: str,
                log: Callable[[str], None]) -> tuple[list[methods.Finalist], str | None]:
        return [methods.Finalist(t, r, (t.values[0],), "its FLOPs") for t, r in pool], None


@pytest.fixture
def by_flops() -> Iterator[ByFlops]:
    method = ByFlops()
    methods.register(method)
    try:
        yield method
    finally:
        methods.unregister(method.name)


def test_a_registered_method_runs_a_search_end_to_end(by_flops, tmp_path, monkeypatch):
    import rampsearch.train as train

    def no_training(*args, **kwargs):
        raise AssertionError("the method scores candidates itself; nothing trains")

    monkeypatch.setattr(train, "fit", no_training)
    lines: list[str] = []
    outcome = run_search(TINY, tmp_path / "run", SearchOptions(trials=4, study="tiny", method=by_flops.name),
                         "optuna", show_progress=False, log=lines.append)
    assert by_flops.prepared == 1 and "4 candidates scored by their FLOPs" in lines[0]
    frame = pd.read_csv(tmp_path / "run" / "trials.csv")
    done = frame[frame["state"] == "COMPLETE"]
    assert len(done) == 4 and (done["method"] == by_flops.name).all()
    assert done["value"].tolist() == pytest.approx((done["flops"] / 1e6).tolist())
    best = outcome.summary()["best"]
    assert best is not None and best["score"] == pytest.approx(best["flops"] / 1e6)


def test_registering_is_undone_and_names_are_unique(by_flops):
    assert by_flops.name in methods.names() and methods.get(by_flops.name) is by_flops
    with pytest.raises(ValueError, match="exists already"):
        methods.register(by_flops)
    with pytest.raises(ValueError, match="built-in"):
        methods.unregister(DEFAULT_METHOD)


def test_the_built_in_methods_come_first_and_the_default_is_proxy_training():
    assert methods.names()[:2] == ("train", "one-shot") and DEFAULT_METHOD == "train"
    assert methods.get("train").per_epoch and not methods.get("one-shot").per_epoch
    assert "flops-test" not in methods.names()  # the fixture unregistered it
