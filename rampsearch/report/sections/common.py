"""The helpers and conventions every section shares (rampsearch.report.sections states them)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...architecture import Architecture
from ...config import load_recipe
from ...model_spec import ModelSpec
from ...ramp import RampSchedule
from ...search import methods
from ...search.record import DEFAULT_METHOD
from ..spectra import retrain_recipe

HANDSET = "handset"
HANDSET_COLOUR = "black"
WIDE, SQUARE = (8, 4), (6, 4.5)  # figure sizes in inches: depth/trial axes, scatter plots


@dataclass(frozen=True)
class RetrainName:
    """What the retraining is called: `long` in sentences ("6-epoch proxy retrain"), `short` in headers."""

    long: str
    short: str


def retrain_name(data) -> RetrainName:
    """"full" only for the paper recipe at its own epochs; otherwise epochs and recipe, e.g. "6-epoch proxy retrain";
    with a target, `long` names it: "6-epoch proxy retrain on small at 224 px"."""
    settings = data.plan["settings"]
    recipe = str(settings["recipe"])
    epochs = settings.get("epochs") or retrain_recipe(data).epochs
    on = f" on {target_words(data.target)}" if data.target else ""
    if recipe == "paper" and epochs == load_recipe("paper", None, data.variant).epochs:
        return RetrainName(f"full retrain (paper recipe, {epochs} epochs){on}", "full")
    label = Path(recipe).stem  # a recipe file is named by its file name
    return RetrainName(f"{epochs}-epoch {label} retrain{on}", f"{label} retrain")


def target_words(target: dict[str, Any]) -> str:
    """A target in words: "iFormer-small at 224 px", or its name, depths and widths."""
    arch = target["architecture"]
    if arch.get("variant"):
        return f"iFormer-{arch['variant']} at {target['img_size']} px"
    return (f"{target['name']} (depths {'+'.join(map(str, arch['depths']))}, widths "
            f"{'/'.join(map(str, arch['embed_dims']))}) at {target['img_size']} px")


def schedule_colours(data) -> dict[str, str]:
    """One colour per contender, in plan order: the hand-set ramp black, the others C0, C1, ..."""
    others = [c["name"] for c in data.plan["contenders"] if c["name"] != HANDSET]
    return {HANDSET: HANDSET_COLOUR, **{name: f"C{i % 10}" for i, name in enumerate(others)}}


def ramp_specs(data) -> dict[str, ModelSpec]:
    """The retrained iFormer schedules (not ViT baselines), by name, in plan order."""
    return {c["name"]: ModelSpec.from_dict(c["spec"]) for c in data.plan["contenders"] if c["kind"] == "ramp"}


def stages_text(arch: Architecture, ramp: RampSchedule) -> str:
    return " | ".join(ramp.describe_stages(arch))


def seed_scores(data, name: str) -> list[float]:
    rows = data.results[data.results["name"] == name].sort_values("seed")
    return rows["top1"].tolist()


def legend_outside(fig, ax) -> None:
    """The legend of `ax`'s labelled artists, right of the axes (constrained layout makes room)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)


def stage_boundaries(depths: tuple[int, ...]) -> list[float]:
    """Normalized depths between stages: cumulative depth / total blocks, for all but the last stage."""
    n = sum(depths)
    return [sum(depths[:s + 1]) / n for s in range(len(depths) - 1)]


def draw_stage_boundaries(ax, archs: dict[str, Architecture], colours: dict[str, str]) -> None:
    """Dashed lines at the stage boundaries of each distinct architecture (grey for the first, which
    names the stages on the top axis; a different architecture in its first schedule's colour)."""
    by_depths: dict[tuple[int, ...], str] = {}
    for name, arch in archs.items():
        by_depths.setdefault(arch.depths, name)
    for i, (depths, name) in enumerate(by_depths.items()):
        colour = "grey" if i == 0 else colours[name]
        label = "stage boundary" if len(by_depths) == 1 else f"stage boundary ({name})"
        for j, x in enumerate(stage_boundaries(depths)):
            ax.axvline(x, color=colour, linestyle="--", linewidth=0.8, label=label if j == 0 else None)
    if by_depths:
        depths = next(iter(by_depths))
        edges = [0.0, *stage_boundaries(depths), 1.0]
        top = ax.secondary_xaxis("top")
        top.set_xticks([(a + b) / 2 for a, b in zip(edges, edges[1:])],
                       labels=[f"stage {s + 1}" for s in range(len(depths))])
        top.tick_params(length=0, labelsize=8)


def method_words(data) -> methods.Words:
    """What the report says about the search's method (a plan that names none: the default method's)."""
    return methods.get((data.plan.get("search") or {}).get("method") or DEFAULT_METHOD).words
