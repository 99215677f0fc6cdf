"""The Search section: trial counts, the score per trial and best so far, the Pareto front, top trials, importances."""
from __future__ import annotations

import json

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from ...architecture import Architecture
from ...ramp import RampSchedule
from ...search.record import TrialRecord
from .common import HANDSET_COLOUR, WIDE, legend_outside, method_words, stages_text

TOP_TRIALS = 10  # rows of the top-trials table: enough to see what the best ramps share, few enough to read
# Optuna's importance evaluator fits a random forest to (params -> value) over the complete trials;
# below about ten trials that fit is noise, and the importances would read as findings.
MIN_TRIALS_FOR_IMPORTANCE = 10


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
                     "per-stage C_h/C": stages_text(arch, RampSchedule(tuple(json.loads(t["ramp"])))),
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
    legend_outside(fig, ax)
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
    legend_outside(fig, ax)
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
               f"{method_words(data).score_source} {score.label} per trial: the score the search ranked by "
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
