"""The driver's objects in Tune's experiment.

Tune pickles the searcher and the callbacks into the experiment (tuner.pkl) when the Tuner is
created, and Tuner.restore unpickles them. Ours hold this driver's live objects (the study, the
progress bar, which on a terminal cannot be unpickled), so they pickle as references to the
objects of whichever driver restores them: run() registers its own first, in DRIVER. Tune then loads
the searcher state it saved into the rerun's searcher (RampOptunaSearch.restore).
"""
from __future__ import annotations

from typing import Any

DRIVER: dict[str, Any] = {}  # this driver's live objects by role: "searcher", "callback"


def of_this_driver(role: str) -> Any:
    """This driver's object in `role`: "searcher" or "callback"."""
    return DRIVER[role]
