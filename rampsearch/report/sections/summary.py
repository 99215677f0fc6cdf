"""The Summary section: the tables of every contender, the one-line verdict and what the run could detect."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ...model_spec import ModelSpec
from ...search.space import SUPERNET
from ..stats import ALPHA, MAX_SEEDS_NEEDED, POWER, Comparison, Power, compare, mean_std, power_of
from .common import HANDSET, RetrainName, method_words, retrain_name, seed_scores, stages_text

DETECTABLE = "detectable Δ"  # summary column: the smallest difference the run could detect (rampsearch.report.stats)
SEEDS_FOR_OBSERVED = "seeds for observed Δ"


def _kind(contender: dict[str, Any]) -> str:
    vit = contender["spec"].get("vit") or {}
    return "vit (over budget: smallest config)" if vit.get("over_budget") else contender["kind"]


def _contender_stages(contender: dict[str, Any]) -> str:
    if contender["kind"] != "ramp":
        return ""
    spec = ModelSpec.from_dict(contender["spec"])
    return stages_text(spec.architecture, spec.ramp)


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
    handset, top1 = seed_scores(data, HANDSET), f"{name.short} top-1"
    rows = []
    for c in data.plan["contenders"]:
        scores = seed_scores(data, c["name"])
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
        f"the score alone); {data.space.score.short} is {method_words(data).score_is}, the "
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
    where = (f"Candidates were scored by {method_words(data).scored_by} "
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
    best, handset = seed_scores(data, "best"), seed_scores(data, HANDSET)
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
