"""Ways to parameterize a ramp for a sampler. Adding one means adding one class to `PARAMETERIZATIONS`.

Each turns sampled numbers into a valid `RampSchedule` for an architecture (`suggest`), and a
schedule back into the sampler's numbers (`params_of`), which is how the hand-set ramp is
enqueued as the first trial. Ratios are drawn in [low, high] and snapped to whole heads. Where the
ramps it can build are few enough to list, `grid` lists them (a search that has scored them all is
complete); None where they are not (knots and monotone ramps: no simple product of choices).
They live beside the ramp, not in the search, because the supernet (rampsearch.supernet) samples
its sub-networks' ramps with them too.
"""
from __future__ import annotations

import itertools
import math
from typing import Protocol

from .architecture import Architecture
from .ramp import ContinuousRamp, RampSchedule


class Suggester(Protocol):
    """The part of optuna.Trial a parameterization uses (Ray's trial wrapper has it too)."""

    def suggest_float(self, name: str, low: float, high: float) -> float: ...


class Parameterization(Protocol):
    name: str

    def suggest(self, trial: Suggester, arch: Architecture, low: float, high: float) -> RampSchedule: ...

    def params_of(self, ramp: RampSchedule, arch: Architecture, low: float, high: float) -> dict[str, float]: ...

    def grid(self, arch: Architecture, low: float, high: float, limit: int) -> list[RampSchedule] | None: ...


# Ratios a head count is reachable from are at least 1/units wide (units <= a few dozen): evenly spaced
# midpoints this many to [low, high] reach every one of them, and never an endpoint alone.
REACH_POINTS = 4096


def reachable_heads(units: int, low: float, high: float) -> list[int]:
    """High-frequency head counts (of `units`) that sampled ratios in [low, high] snap to (as
    RampSchedule.snapped rounds), ascending; a count reached only at an exact endpoint is left out."""
    step = (high - low) / REACH_POINTS
    return sorted({units - round((1 - (low + (i + 0.5) * step)) * units) for i in range(REACH_POINTS)})


def _product_grid(arch: Architecture, choices: list[list[int]], expand: list[int], limit: int) -> list[RampSchedule] | None:
    """Every ramp that picks one head count per group (`choices[g]`), block b taking its group
    `expand[b]`'s pick; None when there are more than `limit`."""
    if math.prod(len(c) for c in choices) > limit:
        return None
    return [RampSchedule.from_high_heads(arch, [pick[g] for g in expand]) for pick in itertools.product(*choices)]


def _clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


class Free:
    """One ratio per block."""

    name = "free"

    def suggest(self, trial, arch, low, high):
        return RampSchedule.snapped(arch, [trial.suggest_float(f"ratio_{b}", low, high)
                                           for b in range(arch.num_blocks)])

    def params_of(self, ramp, arch, low, high):
        return {f"ratio_{b}": _clip(r, low, high) for b, r in enumerate(ramp.ratios)}

    def grid(self, arch, low, high, limit):
        choices = [reachable_heads(units, low, high) for units in arch.block_units]
        return _product_grid(arch, choices, list(range(arch.num_blocks)), limit)


class PerStage:
    """One ratio per stage, shared by the stage's blocks."""

    name = "per_stage"

    def suggest(self, trial, arch, low, high):
        per_stage = [trial.suggest_float(f"ratio_stage{s + 1}", low, high) for s in range(len(arch.depths))]
        return RampSchedule.snapped(arch, [per_stage[s] for s in arch.block_stages])

    def params_of(self, ramp, arch, low, high):
        return {f"ratio_stage{s + 1}": _clip(sum(rs) / len(rs), low, high)
                for s, rs in enumerate(ramp.per_stage(arch))}

    def grid(self, arch, low, high, limit):
        stage_units = [arch.embed_dims[s] // arch.head_dim for s in range(len(arch.depths))]
        choices = [reachable_heads(units, low, high) for units in stage_units]
        return _product_grid(arch, choices, list(arch.block_stages), limit)


class Monotone:
    """A non-increasing ramp: a start ratio, then per block the fraction of the way down to `low` it drops."""

    name = "monotone"

    def suggest(self, trial, arch, low, high):
        ratio = trial.suggest_float("ratio_start", low, high)
        curve = [ratio]
        for b in range(1, arch.num_blocks):
            ratio = low + (ratio - low) * (1 - trial.suggest_float(f"drop_{b}", 0.0, 1.0))
            curve.append(ratio)
        # Snap down to whole heads and never above the previous block, so it stays non-increasing.
        heads, previous = [], 1.0
        for r, width in zip(curve, arch.block_widths):
            units = width // arch.head_dim
            # 1e-6 absorbs float error in a round trip through params_of (0.3 * 10 = 2.9999999...)
            k = min(math.floor(r * units + 1e-6), math.floor(previous * units + 1e-6))
            heads.append(k)
            previous = k / units
        return RampSchedule.from_high_heads(arch, heads)

    def params_of(self, ramp, arch, low, high):
        rs = [_clip(r, low, high) for r in ramp.ratios]
        params = {"ratio_start": rs[0]}
        for b in range(1, len(rs)):
            above = rs[b - 1] - low
            params[f"drop_{b}"] = _clip(1 - (rs[b] - low) / above, 0.0, 1.0) if above > 0 else 0.0
        return params

    def grid(self, arch, low, high, limit):
        return None


class Knots:
    """A piecewise-linear ramp over normalized depth with `count` evenly spaced knots."""

    name = "knots"

    def __init__(self, count: int = 4) -> None:
        self.count = count

    def positions(self) -> list[float]:
        return [j / (self.count - 1) for j in range(self.count)] if self.count > 1 else [0.5]

    def suggest(self, trial, arch, low, high):
        knots = [(x, trial.suggest_float(f"knot_{j}", low, high)) for j, x in enumerate(self.positions())]
        return ContinuousRamp(tuple(knots)).instantiate(arch)

    def params_of(self, ramp, arch, low, high):
        n = arch.num_blocks
        nearest = [min(range(n), key=lambda b: abs((b + 0.5) / n - x)) for x in self.positions()]
        return {f"knot_{j}": _clip(ramp.ratios[b], low, high) for j, b in enumerate(nearest)}

    def grid(self, arch, low, high, limit):
        return None


PARAMETERIZATIONS = {"free": Free, "per_stage": PerStage, "monotone": Monotone, "knots": Knots}
