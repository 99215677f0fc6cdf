"""The report's sections; each reads RunData and adds headings, text, tables and figures to a Document.

Conventions every section keeps:
- The retraining is named after its recipe (`retrain_name`): "full" only for the paper recipe at
  its own epochs, otherwise e.g. "6-epoch proxy retrain"; column headers and the verdict use it.
- A trial *counts* (best so far, Pareto front, top trials) when it is COMPLETE and within every
  budget constraint of the space; over-budget, pruned and failed candidates never do.
- Accuracy in a trial table is the accuracy objective's value (`value`, or `value_I` when the
  search had several objectives).
- Normalized depth: block b of n sits at (b + 0.5) / n; stage s ends at (depths[0] + ... +
  depths[s]) / n, where a dashed line marks the boundary on every depth axis.
- Every schedule keeps one colour across figures, the hand-set ramp black; a seed band has its
  line's colour; a legend lists only what is drawn and sits outside the axes, and figures use
  constrained layout, so no label is covered or cut.
- With one seed there is no ± and no test ("no test (1 seed)"); a test is named as run ("paired
  t" when both schedules ran the same seeds, "Welch t" otherwise).
"""
from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..architecture import Architecture  # noqa: E402
from ..config import load_recipe  # noqa: E402
from ..machine import cpu_model  # noqa: E402
from ..model_spec import ModelSpec  # noqa: E402
from ..ramp import RampSchedule  # noqa: E402
from ..redact import redact  # noqa: E402
from ..search import methods  # noqa: E402
from ..search.record import TrialRecord  # noqa: E402
from ..search.space import SUPERNET  # noqa: E402
from .spectra import retrain_recipe, trained_profiles  # noqa: E402
from .stats import ALPHA, MAX_SEEDS_NEEDED, POWER, Comparison, Power, compare, kendall_tau, mean_std  # noqa: E402
from .stats import power_of  # noqa: E402

HANDSET = "handset"
DETECTABLE = "detectable Δ"  # summary column: the smallest difference the run could detect (rampsearch.report.stats)
SEEDS_FOR_OBSERVED = "seeds for observed Δ"
HANDSET_COLOUR = "black"
TOP_TRIALS = 10  # rows of the top-trials table: enough to see what the best ramps share, few enough to read
# Optuna's importance evaluator fits a random forest to (params -> value) over the complete trials;
# below about ten trials that fit is noise, and the importances would read as findings.
MIN_TRIALS_FOR_IMPORTANCE = 10
WIDE, SQUARE = (8, 4), (6, 4.5)  # figure sizes in inches: depth/trial axes, scatter plots


# -- shared helpers -----------------------------------------------------------------------------

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


def _colours(data) -> dict[str, str]:
    """One colour per contender, in plan order: the hand-set ramp black, the others C0, C1, ..."""
    others = [c["name"] for c in data.plan["contenders"] if c["name"] != HANDSET]
    return {HANDSET: HANDSET_COLOUR, **{name: f"C{i % 10}" for i, name in enumerate(others)}}


def _ramp_specs(data) -> dict[str, ModelSpec]:
    """The retrained iFormer schedules (not ViT baselines), by name, in plan order."""
    return {c["name"]: ModelSpec.from_dict(c["spec"]) for c in data.plan["contenders"] if c["kind"] == "ramp"}


def _stages_text(arch: Architecture, ramp: RampSchedule) -> str:
    return " | ".join(ramp.describe_stages(arch))


def _seed_scores(data, name: str) -> list[float]:
    rows = data.results[data.results["name"] == name].sort_values("seed")
    return rows["top1"].tolist()


def _legend_outside(fig, ax) -> None:
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


# -- summary --------------------------------------------------------------------------------------

def _kind(contender: dict[str, Any]) -> str:
    vit = contender["spec"].get("vit") or {}
    return "vit (over budget: smallest config)" if vit.get("over_budget") else contender["kind"]


def _contender_stages(contender: dict[str, Any]) -> str:
    if contender["kind"] != "ramp":
        return ""
    spec = ModelSpec.from_dict(contender["spec"])
    return _stages_text(spec.architecture, spec.ramp)


def _top1_text(scores: list[float]) -> str:
    """Mean ± std over seeds; a single seed's score alone (no spread to show)."""
    if not scores:
        return ""
    mean, std = mean_std(scores)
    return f"{mean:.2f}" if len(scores) == 1 else f"{mean:.2f} ± {std:.2f}"


def _ci_text(cmp: Comparison) -> str:
    """The 95% CI, blank without a test (with one seed it is infinite, with no variance a single point)."""
    return "" if cmp.no_test else f"[{cmp.ci_low:+.2f}, {cmp.ci_high:+.2f}]"


def _summary_rows(data, name: RetrainName) -> pd.DataFrame:
    """summary.csv: one row per contender, every column (the page shows two narrower views of it)."""
    handset, top1 = _seed_scores(data, HANDSET), f"{name.short} top-1"
    rows = []
    for c in data.plan["contenders"]:
        scores = _seed_scores(data, c["name"])
        mean, std = mean_std(scores) if scores else (math.nan, math.nan)
        row = {"schedule": c["name"], "kind": _kind(c), "per-stage C_h/C": _contender_stages(c),
               "params (M)": c["params"] / 1e6, "GFLOPs": c["flops"] / 1e9,
               "img/s": c.get("inference_img_s", math.nan),
               data.space.score.short: math.nan if c.get("proxy_score") is None else c["proxy_score"],
               f"{top1} mean": mean, f"{top1} std": std if len(scores) > 1 else math.nan,
               top1: _top1_text(scores), "seeds": len(scores),
               "Δ vs hand-set": math.nan, "95% CI": "", "test": "", "p": math.nan,
               DETECTABLE: math.nan, SEEDS_FOR_OBSERVED: math.nan}
        if c["name"] != HANDSET and scores and handset:
            paired = len(scores) == len(handset)
            cmp, power = compare(scores, handset, paired=paired), power_of(scores, handset, paired=paired)
            row.update({"Δ vs hand-set": cmp.difference, "95% CI": _ci_text(cmp),
                        "test": f"no test ({cmp.no_test})" if cmp.no_test else cmp.test, "p": cmp.p_value,
                        DETECTABLE: power.detectable,
                        SEEDS_FOR_OBSERVED: math.nan if power.seeds_for_observed is None
                        else power.seeds_for_observed})
        rows.append(row)
    return pd.DataFrame(rows)


def summary_section(doc, data) -> str:
    """Summary tables and the one-line verdict (returned)."""
    doc.section("Summary")
    name = retrain_name(data)
    frame = _summary_rows(data, name)
    verdict = _verdict(data, name)
    doc.paragraph(verdict, css_class="verdict")
    top1 = f"{name.short} top-1"
    accuracy = frame[["schedule", top1, "seeds", "Δ vs hand-set", "95% CI", "test", "p", DETECTABLE,
                      SEEDS_FOR_OBSERVED]]
    cost = frame[["schedule", "kind", "per-stage C_h/C", "params (M)", "GFLOPs", "img/s", data.space.score.short]]
    doc.table(frame.drop(columns=[top1]), "summary", views=[accuracy, cost])
    doc.paragraph(
        f"{top1} is the last-epoch validation accuracy of the {name.long}, mean ± std over seeds (with one seed, "
        f"the score alone); {data.space.score.short} is {_method_words(data).score_is}, the "
        f"{data.space.score.label} the search ranked by. The difference to the "
        "hand-set ramp has a 95% confidence interval and a t-test over seeds, named as run: paired t when both "
        "schedules ran the same seeds, Welch t otherwise; with one seed, or when every seed differs by the same "
        f"amount, there is no test. {DETECTABLE} is the smallest true difference this many seeds would detect "
        f"with {POWER:.0%} power at two-sided {ALPHA:g}, from the measured spread of the per-seed differences "
        f"(of each schedule's scores when unpaired); {SEEDS_FOR_OBSERVED} is how many seeds the observed "
        f"difference would need for that (blank: none measured, or more than {MAX_SEEDS_NEEDED}). img/s is the inference throughput measured once when retraining (fp32, eval "
        f"mode, median of repeats). FLOPs are fvcore multiply-adds at {data.img_size}px with a "
        f"{data.space.budget.num_classes}-class head.")
    _finalists_paragraph(doc, data)
    return verdict


def _method_words(data) -> methods.Words:
    """What the report says about the search's method (a plan that names none: the default method's)."""
    return methods.get((data.plan.get("search") or {}).get("method") or methods.DEFAULT).words


def _finalists_paragraph(doc, data) -> None:
    """How each retrained schedule was chosen, and which weights its retraining started from."""
    contenders = data.plan["contenders"]
    chosen = "; ".join(f"{c['name']}: {c['chosen_by']}" for c in contenders if c.get("chosen_by"))
    inherited = [c["name"] for c in contenders if c.get("init") == SUPERNET]
    start = (f"Retraining fine-tuned the weights the search's supernet passes on to {', '.join(inherited)} "
             "(--init supernet), so the comparison shows inherited weights, not training from scratch."
             if inherited else "Every schedule was retrained from scratch (random initial weights).")
    search = data.plan.get("search") or {}
    method = search.get("method")
    where = (f"Candidates were scored by {_method_words(data).scored_by} "
             "on a held-out search split of the training data, never on the validation set reported here. "
             if method else "")
    doc.paragraph(f"{where}How each schedule was chosen: {chosen or 'not recorded (an older retraining plan)'}. "
                  f"{start}")


def _search_caveat(data) -> str:
    """The verdict's opening when the hand-set ramp scored higher in the search, else ''."""
    search = data.plan.get("search") or {}
    if not search.get("handset_scored_higher"):
        return ""
    sentence = search.get("sentence") or "the hand-set ramp scored higher in the search than every searched schedule"
    return sentence[0].upper() + sentence[1:] + ". "


def _verdict(data, name: RetrainName) -> str:
    best, handset = _seed_scores(data, "best"), _seed_scores(data, HANDSET)
    if not best:
        return ("Verdict: the search found no within-budget schedule other than the hand-set ramp, "
                "so there is nothing to compare.")
    caveat = _search_caveat(data)
    subject = f'{caveat}The runner-up retrained as "best"' if caveat else "the searched ramp"
    paired = len(best) == len(handset)
    cmp, power = compare(best, handset, paired=paired), power_of(best, handset, paired=paired)
    looks = (data.stopping or {}).get("looks") or []
    if looks:  # seeds: auto: the interval of the last look, adjusted for looking after every seed
        last = looks[-1]
        significant = last["decided"]
        evidence = (f"Δ {cmp.difference:+.2f} points, 95% CI [{last['ci_low']:+.2f}, {last['ci_high']:+.2f}] "
                    f"adjusted for {len(looks)} look{'s' if len(looks) > 1 else ''} (seeds: auto)")
    else:
        significant = cmp.significant
        interval = f"95% CI {_ci_text(cmp)}, " if _ci_text(cmp) else ""
        evidence = f"Δ {cmp.difference:+.2f} points, {interval}{cmp.test_result()}"
    if significant:
        word = "better than" if cmp.difference > 0 else "worse than"
    else:
        word = "not significantly different from"
    contenders = {c["name"]: c for c in data.plan["contenders"]}
    gf_best, gf_hand = contenders["best"]["flops"] / 1e9, contenders[HANDSET]["flops"] / 1e9
    seeds = f", {cmp.n} seeds" if cmp.n > 1 else ""  # one seed is already said: "no test (1 seed)"
    verdict = (f"Verdict: {subject} is {word} the hand-set ramp in the {name.long}: top-1 {_top1_text(best)}% vs "
               f"{_top1_text(handset)}% ({evidence}{seeds}) at {gf_best:.4g} vs {gf_hand:.4g} GFLOPs.")
    if not significant:
        verdict += " " + power_words(power, cmp.difference)
    if data.stopping:
        verdict += f" Seeds: auto stopped after {data.stopping['seeds']} seeds: {data.stopping['sentence']}."
    return verdict


def power_words(power: Power, difference: float) -> str:
    """What a comparison that decided nothing could have detected, in one or two plain sentences."""
    if power.n < 2:
        return ("With 1 seed this run cannot detect a difference of any size: it measured no seed-to-seed "
                "spread to test against.")
    if math.isnan(power.detectable):
        return (f"Every one of the {power.n} seeds differed by the same amount, so no spread was measured and "
                "nothing can be said about the difference this run could detect.")
    words = (f"With {power.n} seeds this run could only detect differences above {power.detectable:.2f} points "
             f"(two-sided {ALPHA:g}, {POWER:.0%} power), so it cannot decide anything smaller")
    if power.seeds_for_observed is not None:
        return words + f"; the observed {abs(difference):.2f} would need about {power.seeds_for_observed} seeds."
    if difference != 0:
        return words + f"; the observed {abs(difference):.2f} would need more than {MAX_SEEDS_NEEDED} seeds."
    return words + "."


# -- ramp -----------------------------------------------------------------------------------------

def ramp_section(doc, data) -> None:
    doc.section("Ramp")
    specs, colours = _ramp_specs(data), _colours(data)
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    rows = []
    for name, spec in specs.items():
        arch, ramp = spec.architecture, spec.ramp
        n = arch.num_blocks
        ax.step([(b + 0.5) / n for b in range(n)], ramp.ratios, where="mid", marker="o", markersize=3, label=name,
                color=colours[name], linewidth=2.5 if name == HANDSET else 1.5)
        for b, ((c_h, c_l), stage) in enumerate(zip(ramp.channels(arch), arch.block_stages)):
            rows.append({"schedule": name, "block": b, "stage": stage + 1, "C_h/C": ramp.ratios[b],
                         "C_h": c_h, "C_l": c_l})
    draw_stage_boundaries(ax, {name: spec.architecture for name, spec in specs.items()}, colours)
    ax.set(xlabel="normalized depth (block centre)", ylabel="C_h / C (high-frequency share)", xlim=(0, 1),
           ylim=(-0.05, 1.05), title="Frequency ramp per block")
    _legend_outside(fig, ax)
    doc.figure(fig, "ramp", "Per-block C_h/C of the retrained schedules, the hand-set ramp in black; dashed "
                            "lines mark the stage boundaries.")
    doc.table(pd.DataFrame(rows), "ramps")


# -- transfer -------------------------------------------------------------------------------------

def transfer_section(doc, data) -> None:
    """With a target: each schedule as searched and as mapped onto the target, side by side, with the target's
    costs and what the mapping did (rampsearch.transfer). Nothing without a target."""
    target = data.target
    if not target:
        return
    from ..flops import flops_model
    from ..search.space import Budget
    from ..transfer import describe_budget

    doc.section("Transfer")
    source = target["source"]
    proxy_arch = Architecture.from_dict(source["architecture"])
    doc.paragraph(
        f"The search ran on {_arch_words(proxy_arch)} at {source['img_size']} px; its schedules were retrained on "
        f"{target_words(target)}, against that architecture's own hand-set ramp. Each searched ramp was mapped stage "
        "by stage: within a stage, its ratios form a piecewise-linear curve over the stage's normalized depth, read "
        "at the target's block centres and snapped to whole heads (rampsearch.ramp.transfer_ramp). Only the ramp "
        f"transfers. Target budget: {describe_budget(Budget(**target['budget']))} ({target['budget_from']}); a mapped "
        "ramp over it was moved to the nearest snap within it, as its note says.")
    specs, colours = _ramp_specs(data), _colours(data)
    mapped = [c for c in data.plan["contenders"] if c["kind"] == "ramp" and c.get("proxy_ramp") is not None]
    fig, axes = plt.subplots(1, len(mapped), figsize=(3.2 * len(mapped) + 1, 3.6), sharey=True, layout="constrained",
                             squeeze=False)
    rows = []
    num_classes = target["budget"]["num_classes"]
    for c, ax in zip(mapped, axes[0]):
        name, spec = c["name"], specs[c["name"]]
        searched_arch, searched = Architecture.from_dict(c["proxy_architecture"]), RampSchedule(tuple(c["proxy_ramp"]))
        for arch, ramp, style, label in ((searched_arch, searched, ":", "searched"),
                                         (spec.architecture, spec.ramp, "-", "on target")):
            n = arch.num_blocks
            ax.step([(b + 0.5) / n for b in range(n)], ramp.ratios, where="mid", linestyle=style, marker="o",
                    markersize=3, color=colours[name], label=label)
        draw_stage_boundaries(ax, {"target": spec.architecture, "searched": searched_arch},
                              {"target": "grey", "searched": "silver"})
        ax.set(title=name, xlabel="normalized depth", xlim=(0, 1), ylim=(-0.05, 1.05))
        ax.legend(fontsize=7, loc="upper right")
        proxy_flops = flops_model(searched_arch, source["img_size"], num_classes).of(searched)
        rows.append({"schedule": name, "searched C_h/C": _stages_text(searched_arch, searched),
                     "searched GFLOPs": proxy_flops / 1e9,
                     "target C_h/C": _stages_text(spec.architecture, spec.ramp),
                     "target GFLOPs": c["flops"] / 1e9, "target params (M)": c["params"] / 1e6,
                     "note": c.get("transfer", "")})
    axes[0][0].set_ylabel("C_h / C (high-frequency share)")
    doc.figure(fig, "transfer", "Per schedule, its per-block C_h/C as searched on the proxy (dotted) and as retrained "
                                "on the target (solid), over normalized depth; dashed lines mark the stage boundaries "
                                "of the target (grey) and, where they differ, of the proxy (silver).")
    doc.table(pd.DataFrame(rows), "transfer")


def _arch_words(arch: Architecture) -> str:
    if arch.variant:
        return f"iFormer-{arch.variant}"
    return f"an iFormer with depths {'+'.join(map(str, arch.depths))} and widths {'/'.join(map(str, arch.embed_dims))}"


# -- search ---------------------------------------------------------------------------------------

def accuracy_column(space) -> str:
    """The trials.csv column holding the accuracy objective: the searched score (`search.score`)."""
    return f"value_{space.objectives.index('accuracy')}" if space.multi_objective else "value"


def within_budget(trials: pd.DataFrame, budget) -> pd.Series:
    """Per trial, whether its FLOPs and parameters meet every budget constraint (unknown: no)."""
    def ok(row) -> bool:
        if pd.isna(row["flops"]) or pd.isna(row["params"]):
            return False
        return all(v <= 0 for v in budget.violations(int(row["flops"]), int(row["params"])).values())

    return trials.apply(ok, axis=1).astype(bool) if len(trials) else pd.Series(dtype=bool)


def counted(trials: pd.DataFrame, space) -> pd.Series:
    """Per trial, whether it counts: COMPLETE and within budget."""
    return (trials["state"] == "COMPLETE") & within_budget(trials, space.budget)


def best_so_far(trials: pd.DataFrame, space) -> np.ndarray:
    """Per trial in number order, the best score of the counted trials up to it (NaN before the first)."""
    ordered = trials.sort_values("number")
    values = ordered[accuracy_column(space)].where(counted(ordered, space)).astype(float)
    best = values.cummin() if space.score.direction == "minimize" else values.cummax()
    return best.ffill().to_numpy()  # cummin/cummax leave a NaN where a trial does not count


def top_trials(trials: pd.DataFrame, space, k: int = TOP_TRIALS) -> pd.DataFrame:
    """The `k` best counted trials: number, searched score and its standard error over images, GFLOPs,
    per-stage C_h/C, hand-set flag."""
    acc, score = accuracy_column(space), space.score
    ascending = score.direction == "minimize"
    ranked = trials[counted(trials, space)].sort_values([acc, "number"], ascending=[ascending, True]).head(k)
    se = trials["score_se"] if "score_se" in trials else pd.Series(np.nan, index=trials.index)
    rows = []
    for index, t in ranked.iterrows():
        arch = Architecture.from_dict(json.loads(t["architecture"]))
        rows.append({"trial": int(t["number"]), score.short: float(t[acc]), "± s.e.": float(se[index]),
                     "GFLOPs": t["flops"] / 1e9,
                     "per-stage C_h/C": _stages_text(arch, RampSchedule(tuple(json.loads(t["ramp"])))),
                     "hand-set": bool(t["handset"])})
    return pd.DataFrame(rows, columns=["trial", score.short, "± s.e.", "GFLOPs", "per-stage C_h/C", "hand-set"])


def _last_score(trials: pd.DataFrame, metric: str) -> pd.Series:
    """Each trial's last reported `metric` (on the search split) (a pruned trial has no final value)."""
    epochs = trials.filter(regex=rf"^{metric}_e\d+$")
    epochs = epochs[sorted(epochs.columns, key=lambda c: int(c.rsplit("e", 1)[1]))]
    return epochs.ffill(axis=1).iloc[:, -1] if epochs.shape[1] else pd.Series(np.nan, index=trials.index)


def _at_bottom(ax, xs: pd.Series, **style) -> None:
    """Mark trials without a score at their x along the bottom edge of the axes (the x axis covers them)."""
    if len(xs):
        ax.scatter(xs, np.zeros(len(xs)), transform=ax.get_xaxis_transform(), clip_on=False, **style)
        ax.update_datalim(np.column_stack([np.asarray(xs, dtype=float), np.zeros(len(xs))]), updatey=False)


def history_figure(trials: pd.DataFrame, space):
    """Accuracy per trial with the best-so-far step line, which only counted trials can raise."""
    trials = trials.sort_values("number")
    acc, ok = accuracy_column(space), counted(trials, space)
    handset = trials["handset"].astype(bool)
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    scored = trials[ok & ~handset]
    if len(scored):
        ax.scatter(scored["number"], scored[acc], color="C0", label="complete, within budget", zorder=3)
    ring = trials[handset & (trials["state"] == "COMPLETE")]
    if len(ring):
        ax.scatter(ring["number"], ring[acc], s=120, facecolors="none", edgecolors=HANDSET_COLOUR, zorder=3,
                   label="hand-set ramp" + ("" if ok[ring.index].all() else " (over budget: not counted)"))
    pruned = trials[trials["state"] == "PRUNED"]
    last = _last_score(pruned, space.score.metric).dropna()
    if len(last):
        ax.scatter(pruned.loc[last.index, "number"], last, marker="x", color="grey", label="pruned (last epoch)")
    _at_bottom(ax, trials.loc[trials["state"] == "OVER_BUDGET", "number"], marker="|", color="red", s=80,
               label="over budget (never trained)")
    _at_bottom(ax, trials.loc[trials["state"] == "FAIL", "number"], marker="x", color="darkred",
               label="failed")
    best = best_so_far(trials, space)
    if np.isfinite(best).any():
        ax.step(trials["number"], best, where="post", color="C1", label="best so far (complete, within budget)")
    ax.set(xlabel="trial", ylabel=space.score.label, title="Optimization history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered
    _legend_outside(fig, ax)
    return fig


def _pareto(points: pd.DataFrame, acc: str, score) -> pd.DataFrame:
    """The trials no other trial beats on both fewer FLOPs and a better score, by FLOPs."""
    ordered = points.sort_values(["flops", acc], ascending=[True, score.direction == "minimize"])
    best, keep = None, []
    for idx, row in ordered.iterrows():
        if best is None or score.better(row[acc], best):
            keep.append(idx)
            best = row[acc]
    return ordered.loc[keep]


def pareto_figure(trials: pd.DataFrame, space):
    """Accuracy vs FLOPs of the counted trials, their Pareto front, rejected candidates and the budget."""
    acc, ok = accuracy_column(space), counted(trials, space)
    handset = trials["handset"].astype(bool)
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    searched, hand = trials[ok & ~handset], trials[handset & (trials["state"] == "COMPLETE")]
    if len(searched):
        ax.scatter(searched["flops"] / 1e9, searched[acc], color="C0", label="complete, within budget")
    if len(hand):
        ax.scatter(hand["flops"] / 1e9, hand[acc], color=HANDSET_COLOUR, marker="*", s=160, label="hand-set ramp")
    _at_bottom(ax, trials.loc[trials["state"] == "OVER_BUDGET", "flops"] / 1e9, marker="|", color="red", s=80,
               label="over budget (never trained)")
    front = _pareto(trials[ok], acc, space.score)
    if len(front) > 1:
        ax.plot(front["flops"] / 1e9, front[acc], color="C2", drawstyle="steps-post", label="Pareto front")
    if space.budget.gflops:
        ax.axvline(space.budget.gflops, color="red", linestyle="--", label="FLOPs budget")
    ax.set(xlabel="GFLOPs (fvcore)", ylabel=space.score.label, title="Searched score vs FLOPs")
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)  # GFLOPs as written, not as an offset
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # long labels of small GFLOPs stay apart
    _legend_outside(fig, ax)
    return fig


def search_section(doc, data) -> None:
    doc.section("Search")
    trials = data.trials
    if trials.empty:
        doc.paragraph("No trials.csv in the run directory.")
        return
    counts = trials["state"].value_counts().rename_axis("state").reset_index(name="trials")
    score = data.space.score
    doc.table(counts, "trial_counts")
    doc.figure(history_figure(trials, data.space), "history",
               f"{_method_words(data).score_source} {score.label} per trial: the score the search ranked by "
               "(search.score). The best-so-far line moves only at complete, within-budget trials; over-budget "
               "candidates (never trained) and failed trials are marked along the bottom.")
    doc.figure(pareto_figure(trials, data.space), "pareto",
               f"Pareto front of the searched score ({score.short}) vs FLOPs over the complete, within-budget "
               "trials, with the budget line; over-budget candidates are marked along the bottom at their FLOPs.")
    doc.paragraph(f"Top trials: the best complete, within-budget trials of the search (at most {TOP_TRIALS}) by "
                  f"{score.label}, each with its standard error over the scoring images (± s.e.). Repeats of a "
                  "candidate scored earlier (state DUPLICATE) were answered with its score and never trained.")
    doc.table(top_trials(trials, data.space), "top_trials")
    _importances(doc, data)


def _importances(doc, data) -> None:
    import optuna

    finished = data.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    complete = sum(not TrialRecord.of(t).rejected for t in finished)  # repeats answered from a trial are not new
    if complete < MIN_TRIALS_FOR_IMPORTANCE:
        doc.paragraph(f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
                      f"this search has {complete}.")
        return
    index = data.space.objectives.index("accuracy")
    try:
        importances = optuna.importance.get_param_importances(data.study, target=lambda t: t.values[index])
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        doc.paragraph(f"Parameter importances not available: {exc}")
        return
    frame = pd.DataFrame({"parameter": list(importances), "importance": list(importances.values())})
    doc.table(frame, "param_importances")
    repeats = len(finished) - complete
    doc.paragraph(f"Parameter importances of the searched score ({data.space.score.short}): Optuna's default "
                  f"evaluator over the {complete} complete trials"
                  + (f" and {repeats} repeats answered with their earlier trial's score." if repeats else "."))


# -- proxy fidelity -------------------------------------------------------------------------------

def proxy_fidelity_section(doc, data) -> None:
    """Kendall τ between the search's scores and the retraining's (on a target: transfer fidelity)."""
    doc.section("Transfer fidelity" if data.target else "Proxy fidelity")
    name, score = retrain_name(data), data.space.score
    retrained = f"{name.short} top-1 mean"
    rows = []
    for c in data.plan["contenders"]:
        scores = _seed_scores(data, c["name"])
        if c["kind"] == "ramp" and c.get("proxy_score") is not None and scores:
            rows.append({"schedule": c["name"], score.short: c["proxy_score"], retrained: float(np.mean(scores))})
    frame = pd.DataFrame(rows)
    if len(frame) < 2:
        doc.paragraph("Fewer than two retrained schedules have a search score: no ranking to compare.")
        return
    # a better score ranks higher on both sides, so a positive τ is agreement whatever the search ranked by
    tau, p = kendall_tau(-score.sort_key(frame[score.short]), frame[retrained])
    between = (f"Kendall τ between {_method_words(data).scores} and the {name.long} (standalone trainings) over "
               f"{len(frame)} schedules")
    if data.target:
        between += (f" (transfer fidelity: the search ranked the schedules at {data.space.img_size} px on the proxy "
                    "architecture; the retraining ranks their mapped ramps on the target)")
    if math.isnan(tau):
        doc.paragraph(f"{between}: undefined, as every schedule has the same score in one of the two.")
    else:
        note = (" With two schedules τ is ±1 by construction; retrain more (--top K) for a real test."
                if len(frame) == 2 else "")
        doc.paragraph(f"{between}: {tau:+.2f} (p={p:.3g}).{note}")
    doc.table(frame, "proxy_fidelity")
    colours = _colours(data)
    fig, ax = plt.subplots(figsize=SQUARE, layout="constrained")
    ax.scatter(frame[score.short], frame[retrained], color=[colours[s] for s in frame["schedule"]])
    if score.direction == "minimize":
        ax.invert_xaxis()  # better to the right on both axes
    for _, row in frame.iterrows():
        ax.annotate(row["schedule"], (row[score.short], row[retrained]), xytext=(4, 4),
                    textcoords="offset points", fontsize=8)
    ax.margins(0.15)  # room for the labels inside the axes
    question = "Does the proxy rank like the target?" if data.target else "Does the proxy rank like retraining?"
    ax.set(xlabel=score.label + (", axis reversed" if score.direction == "minimize" else ""),
           ylabel=f"{name.short} top-1 (%)", title=question)
    doc.figure(fig, "proxy_fidelity", f"Search (proxy) score vs {name.long} score per schedule.")


# -- training curves ------------------------------------------------------------------------------

def training_curves_section(doc, data) -> None:
    doc.section("Training curves")
    colours = _colours(data)
    fig, (top, bottom) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    rows, banded = [], False
    for name, seeds in data.histories.items():
        if not seeds or not seeds[0]:
            continue
        epochs = [h["epoch"] for h in seeds[0]]
        for metric, ax in (("top1", top), ("train_loss", bottom)):
            curves = np.array([[h.get(metric, np.nan) for h in run] for run in seeds if len(run) == len(epochs)])
            mean = curves.mean(axis=0)
            (line,) = ax.plot(epochs, mean, color=colours[name], label=name)
            if len(curves) > 1:  # one seed has no spread to show
                ax.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.15,
                                linewidth=0)
                banded = True
            rows += [{"schedule": name, "metric": metric, "epoch": e, "mean": m} for e, m in zip(epochs, mean)]
    top.set(xlabel="epoch", ylabel="validation top-1 (%)")
    bottom.set(xlabel="epoch", ylabel="training loss")
    for ax in (top, bottom):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    _legend_outside(fig, top)
    band = "band: min-max over seeds, in the line's colour" if banded else "one seed: no band"
    doc.figure(fig, "curves", f"Retraining curves, mean over seeds ({band}).")
    doc.table(pd.DataFrame(rows), "curves")


# -- frequency analysis ---------------------------------------------------------------------------

def frequency_section(doc, data, n_images: int) -> None:
    """Per-block relative log amplitude at the highest frequency, from each schedule's seed-0 weights."""
    doc.section("Frequency analysis")
    profiles = trained_profiles(data, n_images)
    if not profiles:
        doc.paragraph("No trained weights found to analyse.")
        return
    specs, colours = _ramp_specs(data), _colours(data)
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    rows = []
    for name, values in profiles.items():
        n = len(values)
        ax.plot([(b + 0.5) / n for b in range(n)], values, marker="o", color=colours[name], label=name)
        rows += [{"schedule": name, "block": b, "relative log amplitude at pi": v} for b, v in enumerate(values)]
    draw_stage_boundaries(ax, {name: specs[name].architecture for name in profiles}, colours)
    ax.set(xlabel="normalized depth (block centre)", ylabel="Δ log amplitude (π vs 0)", xlim=(0, 1),
           title="High-frequency energy kept by each block")
    _legend_outside(fig, ax)
    doc.figure(fig, "frequency", "Relative log amplitude of the Fourier-transformed block outputs at the highest "
                                 "frequency (higher keeps more high-frequency detail), on validation images; dashed "
                                 "lines mark the stage boundaries.")
    doc.table(pd.DataFrame(rows), "frequency")


# -- metadata -------------------------------------------------------------------------------------

def metadata_section(doc, data, extra: dict[str, Any]) -> None:
    doc.section("Run metadata")
    search = json.loads((data.run_dir / "search.json").read_text()) if (data.run_dir / "search.json").exists() else {}
    versions = {}
    for package in ("torch", "torchvision", "timm", "optuna", "ray", "fvcore", "pandas", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    info = {
        "search space": data.space.source, "study": search.get("study"), "storage": redact(search.get("storage")),
        "backend": search.get("backend"), "search started": search.get("started"),
        "search seconds": search.get("seconds"), "sampler seed": data.space.search.seed,
        "retraining": retrain_name(data).long,
        "retraining settings": data.plan["settings"],
        "retraining seconds (sum over runs)": round(data.results["seconds"].sum(), 1),
        "hardware": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, {_gpu()}",
        "python": platform.python_version(),
        **{f"version {k}": v for k, v in versions.items()}, **extra,
    }
    doc.table(pd.DataFrame({"item": list(info), "value": [json.dumps(v) if isinstance(v, dict) else str(v)
                                                          for v in info.values()]}), "metadata")
    commands = [" ".join(search.get("command", []))] + data.plan.get("commands", [])
    doc.paragraph("Commands (storage passwords redacted):")
    doc.code("\n".join(redact(c) for c in commands if c))


def _gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
