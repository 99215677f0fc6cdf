"""What a search method is: the `SearchMethod` protocol and the types it speaks (rampsearch.search.methods).

Method modules and everything that asks a method (the backends, the finalists, the report) import
these; this module imports the space and the trial record, never a method or the registry.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from optuna.trial import FrozenTrial

from ...architecture import Architecture
from ...model_spec import ModelSpec
from ...ramp import RampSchedule
from ..options import SearchOptions
from ..record import TrialRecord
from ..space import Candidate, RetrainSettings, SearchSpace

Report = Callable[[int, dict[str, float]], None]  # (epoch, metrics); may raise to stop the trial
Pool = list[tuple[FrozenTrial, TrialRecord]]  # the best distinct searched trials with their records, ranked


@dataclass(frozen=True)
class Words:
    """What the report says about a method's scores (each fits the sentence it is used in)."""

    scored_by: str  # "Candidates were scored by {scored_by} on a held-out search split ..."
    score_is: str  # "{score.short} is {score_is}, the {score.label} the search ranked by"
    score_source: str  # "{score_source} {score.label} per trial" (capitalized)
    scores: str  # "Kendall τ between {scores} and the retraining ..."


@dataclass(frozen=True)
class Finalist:
    """A searched schedule chosen for retraining (rampsearch.search.finalists), with its scores."""

    trial: FrozenTrial
    record: TrialRecord
    scores: tuple[float, ...]  # the search's score, then any re-scores (one-shot: the re-score replaces it)
    how: str  # how it was chosen, in words

    @property
    def score(self) -> float:
        return statistics.fmean(self.scores)

    def spec(self, space: SearchSpace) -> ModelSpec:
        return ModelSpec.iformer(*model_of(self.record), space.img_size)


def model_of(record: TrialRecord) -> tuple[Architecture, RampSchedule]:
    """The searched architecture and ramp of a trial's record."""
    return Architecture.from_dict(record.architecture), RampSchedule(record.ramp)


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
        """Refuse (SpaceError, naming the key) a space this method cannot search; called when a space is loaded."""

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
