"""The live progress of a search: trials done/pruned/failed and the best so far, and each trial's epochs."""
from __future__ import annotations

import sys
from typing import Iterable

from optuna.trial import FrozenTrial, TrialState

from .record import TrialRecord
from .score import TOP1, Score


def counts(trials: Iterable[FrozenTrial], score: Score = Score(TOP1)) -> dict[str, int | float | None]:
    """Trial counts by outcome and the best searched score (first objective) among complete trials."""
    out: dict[str, int | float | None] = {"done": 0, "pruned": 0, "failed": 0, "over_budget": 0, "duplicate": 0,
                                          "running": 0, "best": None}
    for t in trials:
        record = TrialRecord.of(t)
        if record.over_budget:
            out["over_budget"] += 1
        elif record.rejected:
            out["duplicate"] += 1
        elif t.state == TrialState.COMPLETE:
            out["done"] += 1
            value = t.values[0]
            out["best"] = value if out["best"] is None else score.best([out["best"], value])
        elif t.state == TrialState.PRUNED:
            out["pruned"] += 1
        elif t.state == TrialState.FAIL:
            out["failed"] += 1
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
    return out


def epoch_line(trial: int, epoch: int, metrics: dict[str, float]) -> str:
    """One line per trained epoch of a trial: how far it is and how fast it trains."""
    return (f"trial {trial}: epoch {epoch}  loss {metrics['loss']:.4f}  top-1 {metrics['top1']:.2f}%  "
            f"{metrics.get('img_s', 0):.0f} img/s")


class Progress:
    """A tqdm bar over trained trials on a terminal; one plain line per change in a log; nothing when disabled."""

    def __init__(self, total: int, enabled: bool = True, desc: str = "search", score: Score = Score(TOP1)) -> None:
        from tqdm import tqdm

        self.score = score
        self.enabled, self.interactive = enabled, sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, unit="trial", file=sys.stderr, dynamic_ncols=True,
                        disable=not (enabled and self.interactive))
        self._last = ""

    def update(self, trials: list[FrozenTrial]) -> None:
        c = counts(trials, self.score)
        finished = c["done"] + c["pruned"] + c["failed"]
        best = "-" if c["best"] is None else self.score.format(c["best"])
        status = (f"done={c['done']} pruned={c['pruned']} failed={c['failed']} over-budget={c['over_budget']} "
                  f"repeats={c['duplicate']} best {self.score.short}={best}")
        if self.interactive:
            self.bar.n = min(finished, self.bar.total)
            self.bar.set_postfix_str(status)
            self.bar.refresh()
        elif self.enabled and status != self._last:
            print(f"search: {finished}/{self.bar.total} trials, {status}", file=sys.stderr, flush=True)
        self._last = status

    def epoch(self, trial: int, epoch: int, metrics: dict[str, float]) -> None:
        self.note(epoch_line(trial, epoch, metrics))

    def note(self, message: str) -> None:
        if self.enabled:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
