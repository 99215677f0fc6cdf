"""The frequency ramp: per-block share C_h/C of channels that go to the high-frequency mixer.

A block of width C splits into C_l = round((1 - r) * C / head_dim) * head_dim attention channels
(whole heads) and C_h = C - C_l high-frequency channels. So a ratio r is valid for a block when
(1 - r) * C / head_dim is a whole number; r = 0 is a pure-attention block, r = 1 a pure-conv block.

Forms a ramp can take:
- `RampSchedule`: one ratio per block (all stages in order), tied to nothing until checked
  against an `Architecture` with `.channels(arch)`.
- `ContinuousRamp`: a piecewise-linear curve r(x) over normalized depth x in [0, 1], given by knots;
  `.instantiate(arch)` snaps it to the nearest valid ratio of every block of any architecture.
- A schedule of one architecture mapped onto another (a ramp searched on a small proxy, deployed on
  iFormer-S/B/L): `transfer_ramp`, stage by stage (see there); every transfer goes through it
  (`retrain --target`, and a ramp file naming another architecture than the model's).
- The hand-set ramp: the paper's lists for S/B/L, and for any other architecture the
  paper-style rule of `paper_style_high_heads`, which reproduces the paper's lists exactly.

Ramp files (YAML or JSON) hold `ramp: [r1, r2, ...]` or `knots: [[x, r], ...]`, and optionally
the `architecture` they were made for (see README, "Ramp files").
"""
from __future__ import annotations

import json
import math
from fractions import Fraction
from itertools import groupby
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from .architecture import VARIANTS, Architecture
from .errors import UserError, read_yaml_mapping

# Ratios typed by hand with two decimals (0.67 for 2/3) are accepted when this close to a valid
# value; valid values of widths up to 1024 (32 heads) are >= 0.031 apart, so this is unambiguous.
RATIO_TOLERANCE = 5e-3


class RampError(UserError):
    """A ramp that does not fit its architecture (the message names the block and the fix)."""


def _block_label(arch: Architecture, block: int) -> str:
    stage = arch.block_stages[block]
    return f"block {block} (stage {stage + 1}, C={arch.block_widths[block]})"


def _valid_ratio(width: int, head_dim: int, high_heads: int) -> float:
    return high_heads * head_dim / width


@dataclass(frozen=True)
class RampSchedule:
    """Per-block C_h/C ratios, all stages in order."""

    ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))

    def __len__(self) -> int:
        return len(self.ratios)

    def high_heads(self, arch: Architecture) -> tuple[int, ...]:
        """Per block, how many head_dim-wide units go to the high-frequency mixer. Validates."""
        if len(self.ratios) != arch.num_blocks:
            raise RampError(
                f"the ramp has {len(self.ratios)} values but the architecture has {arch.num_blocks} blocks "
                f"(depths {'+'.join(map(str, arch.depths))}); give one C_h/C ratio per block")
        heads = []
        for ratio, units in zip(self.ratios, arch.block_units):  # the hot path of every budget check
            if not -RATIO_TOLERANCE <= ratio <= 1 + RATIO_TOLERANCE:  # NaN fails this too
                raise self._invalid(arch, len(heads))
            k = units - round((1 - ratio) * units)
            if abs(ratio * units - k) > RATIO_TOLERANCE * units:
                raise self._invalid(arch, len(heads))
            heads.append(k)
        return tuple(heads)

    def _invalid(self, arch: Architecture, block: int) -> RampError:
        ratio, width, units = self.ratios[block], arch.block_widths[block], arch.block_units[block]
        if not (math.isfinite(ratio) and -RATIO_TOLERANCE <= ratio <= 1 + RATIO_TOLERANCE):
            return RampError(f"{_block_label(arch, block)}: ratio {ratio} is outside [0, 1]")
        below = math.floor(ratio * units)
        options = sorted({_valid_ratio(width, arch.head_dim, k) for k in (below, below + 1) if 0 <= k <= units})
        return RampError(f"{_block_label(arch, block)}: ratio {ratio:g} is not a multiple of "
                         f"head_dim/C = {arch.head_dim}/{width}; nearest valid values: "
                         + ", ".join(f"{o:.6g}" for o in options))

    def channels(self, arch: Architecture) -> list[tuple[int, int]]:
        """Per block (C_h, C_l). Validates."""
        return [(k * arch.head_dim, width - k * arch.head_dim)
                for k, width in zip(self.high_heads(arch), arch.block_widths)]

    @classmethod
    def from_high_heads(cls, arch: Architecture, high_heads: Sequence[int]) -> "RampSchedule":
        return cls(tuple(_valid_ratio(w, arch.head_dim, k) for w, k in zip(arch.block_widths, high_heads)))

    @classmethod
    def from_channels(cls, arch: Architecture, high_channels: Sequence[int]) -> "RampSchedule":
        """From per-block C_h (each a multiple of head_dim)."""
        bad = [(b, c) for b, c in enumerate(high_channels) if c % arch.head_dim]
        if bad:
            block, value = bad[0]
            raise RampError(f"{_block_label(arch, block)}: C_h={value} is not a multiple of head_dim={arch.head_dim}")
        return cls.from_high_heads(arch, [c // arch.head_dim for c in high_channels])

    @classmethod
    def snapped(cls, arch: Architecture, ratios: Sequence[float]) -> "RampSchedule":
        """The valid schedule nearest to arbitrary per-block ratios (clipped to [0, 1])."""
        if len(ratios) != arch.num_blocks:
            raise RampError(f"got {len(ratios)} ratios for an architecture with {arch.num_blocks} blocks")
        heads = []
        for ratio, width in zip(ratios, arch.block_widths):
            units = width // arch.head_dim
            heads.append(units - round((1 - min(max(float(ratio), 0.0), 1.0)) * units))
        return cls.from_high_heads(arch, heads)

    @classmethod
    def handset(cls, arch: Architecture) -> "RampSchedule":
        """The paper's ramp for S/B/L; the paper-style rule for any other architecture."""
        config = VARIANTS.get(arch.variant) if arch.variant else None
        if config is not None and config.handset_low_heads is not None and arch.head_dim == 32:
            units = [w // arch.head_dim for w in arch.block_widths]
            return cls.from_high_heads(arch, [u - a for u, a in zip(units, config.handset_low_heads)])
        return cls.from_high_heads(arch, paper_style_high_heads(arch))

    def per_stage(self, arch: Architecture) -> list[list[float]]:
        """The ratios grouped by stage."""
        out: list[list[float]] = [[] for _ in arch.depths]
        for stage, ratio in zip(arch.block_stages, self.ratios):
            out[stage].append(ratio)
        return out

    def describe_stages(self, arch: Architecture) -> list[str]:
        """Per stage, its ratios as runs: ['0.667×3', '0.5×3', '0.3×4, 0.1×5', '0.0833×3']."""
        return [", ".join(f"{r:.3g}×{len(list(run))}" for r, run in groupby(ratios))
                for ratios in self.per_stage(arch)]

    def to_dict(self, arch: Architecture | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"ramp": list(self.ratios)}
        if arch is not None:
            data["architecture"] = arch.to_dict()
            data["high_channels"] = [c for c, _ in self.channels(arch)]
        return data

    def save(self, path: str | Path, arch: Architecture | None = None) -> None:
        """Write a ramp file; `.json` gives JSON, anything else YAML."""
        path = Path(path)
        data = self.to_dict(arch)
        text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text)


def allowed_high_heads(units: int, low: float, high: float) -> list[int]:
    """High-frequency head counts (of `units`) that ratios in [low, high] snap to, ascending.

    A ratio snaps to the nearest whole head, so the range reaches half a head beyond each end.
    """
    allowed = [k for k in range(units + 1) if low - 0.5 / units <= k / units <= high + 0.5 / units]
    return allowed or [round(low * units)]


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)  # Python's round() goes to even: round(1.5) == round(2.5) == 2


def paper_style_high_heads(arch: Architecture) -> list[int]:
    """The hand-set ramp's rule, in head units (H = C/head_dim heads per block of a stage).

    Stage 1 gives round(2H/3) heads to the high-frequency mixer, stage 2 round(H/2); stage 3
    gives round(3H/10) in its first floor(depth/2) blocks and half that (at least 1) in the rest;
    stage 4 gives 1. Each is clipped to [1, H-1] so both mixers stay, as in the paper; a one-head
    stage is all high-frequency in stages 1-2 and all attention in stages 3-4. For iFormer-S/B/L
    this yields exactly the official `attention_heads` lists.
    """
    heads: list[int] = []
    for stage, (depth, width) in enumerate(zip(arch.depths, arch.embed_dims)):
        units = width // arch.head_dim
        for i in range(depth):
            if stage == 0:
                k = _round_half_up(2 * units / 3)
            elif stage == 1:
                k = _round_half_up(units / 2)
            elif stage == 2:
                first = _round_half_up(3 * units / 10)
                k = first if i < depth // 2 else max(1, first // 2)
            else:
                k = 1
            heads.append(min(max(k, 1), units - 1) if units > 1 else int(stage < 2))
    return heads


@dataclass(frozen=True)
class ContinuousRamp:
    """r(x): piecewise-linear through `knots` (x, r) over normalized depth x in [0, 1].

    Block i of N sits at x = (i + 0.5) / N, so the curve means the same on any depth.
    """

    knots: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        knots = tuple((float(x), float(r)) for x, r in self.knots)
        object.__setattr__(self, "knots", knots)
        if len(knots) < 1:
            raise RampError("a continuous ramp needs at least one knot [x, r]")
        xs = [x for x, _ in knots]
        if any(not 0 <= x <= 1 for x in xs) or any(b <= a for a, b in zip(xs, xs[1:])):
            raise RampError(f"knot positions must increase strictly within [0, 1], got {xs}")
        if any(not 0 <= r <= 1 for _, r in knots):
            raise RampError(f"knot ratios must lie in [0, 1], got {[r for _, r in knots]}")

    def value(self, x: float) -> float:
        (x0, r0), rest = self.knots[0], self.knots[1:]
        if x <= x0:
            return r0
        for x1, r1 in rest:
            if x <= x1:
                return r0 + (r1 - r0) * (x - x0) / (x1 - x0)
            x0, r0 = x1, r1
        return r0

    def instantiate(self, arch: Architecture) -> RampSchedule:
        n = arch.num_blocks
        return RampSchedule.snapped(arch, [self.value((i + 0.5) / n) for i in range(n)])


def transfer_ratios(ramp: RampSchedule, source: Architecture, target: Architecture) -> list[float]:
    """The ramp of `source` as unsnapped C_h/C values for every block of `target`, stage by stage.

    Within each stage, the source's ratios are a piecewise-linear curve through its block centres
    u = (i + 0.5) / depth over the stage's normalized depth u in [0, 1], flat beyond the first and
    last centre; each target block of the same stage reads the curve at its own centre. Stage by
    stage rather than over the whole depth, because a stage boundary is where the width and map size
    change: iFormer-nano (2, 2, 4, 2) and iFormer-S (3, 3, 9, 3) put their boundaries at different
    fractions of the depth, and a whole-depth curve would hand stage-3 ratios to stage-4 blocks.
    """
    ramp.high_heads(source)  # validates against the source, naming the block
    values: list[float] = []
    for ratios, depth in zip(ramp.per_stage(source), target.depths):
        curve = ContinuousRamp(tuple(((i + 0.5) / len(ratios), r) for i, r in enumerate(ratios)))
        values += [curve.value((j + 0.5) / depth) for j in range(depth)]
    return values


def transfer_ramp(ramp: RampSchedule, source: Architecture, target: Architecture) -> RampSchedule:
    """`ramp` of `source` mapped onto `target` (`transfer_ratios`), snapped to whole heads of the target's widths."""
    return RampSchedule.snapped(target, transfer_ratios(ramp, source, target))


def resolve_ramp(ramp: "RampSchedule | ContinuousRamp | Sequence[float] | None", arch: Architecture) -> RampSchedule:
    """Any accepted ramp form → a validated RampSchedule for `arch` (None → hand-set)."""
    if ramp is None:
        schedule = RampSchedule.handset(arch)
    elif isinstance(ramp, ContinuousRamp):
        schedule = ramp.instantiate(arch)
    elif isinstance(ramp, RampSchedule):
        schedule = ramp
    elif isinstance(ramp, (str, bytes)):
        raise RampError(f"ramp {ramp!r}: pass a sequence of floats; to parse text use rampsearch.ramp.load_ramp")
    else:
        schedule = RampSchedule(tuple(ramp))
    schedule.high_heads(arch)
    return schedule


def ramp_from_dict(data: dict[str, Any], source: str = "ramp") -> RampSchedule | ContinuousRamp:
    if not isinstance(data, dict) or ("ramp" in data) == ("knots" in data):
        raise RampError(f"{source}: expected a mapping with exactly one of the keys 'ramp' "
                        "(per-block C_h/C list) or 'knots' ([[x, r], ...] over normalized depth)")
    if "knots" in data:
        return ContinuousRamp(tuple(tuple(k) for k in data["knots"]))
    values = data["ramp"]
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise RampError(f"{source}: 'ramp' must be a list of numbers, got {values!r}")
    return RampSchedule(tuple(values))


def load_ramp(spec: str, arch: Architecture) -> RampSchedule:
    """Parse a command-line ramp: 'handset', a ramp file, or comma-separated ratios (0.67 or 2/3).

    A ramp file that names another architecture (a search's best.yaml on a proxy) maps onto `arch`
    through `transfer_ramp`."""
    spec = spec.strip()
    if spec == "handset":
        return RampSchedule.handset(arch)
    if Path(spec).suffix.lower() in {".yaml", ".yml", ".json"} or Path(spec).is_file():
        data = read_yaml_mapping(spec, "ramp file", RampError)
        ramp = ramp_from_dict(data, source=spec)
        if isinstance(ramp, RampSchedule) and isinstance(data.get("architecture"), dict):
            source = Architecture.from_dict(data["architecture"])
            if source != arch:
                return transfer_ramp(ramp, source, arch)
        return resolve_ramp(ramp, arch)
    try:
        values = [float(Fraction(v.strip())) for v in spec.split(",") if v.strip()]
    except (ValueError, ZeroDivisionError):
        raise RampError(f"--ramp {spec!r}: expected 'handset', a .yaml/.json ramp file, "
                        "or comma-separated ratios like 0.67,2/3,0.5") from None
    return resolve_ramp(values, arch)
