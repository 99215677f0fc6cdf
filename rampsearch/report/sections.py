"""The report's sections; each reads RunData and adds headings, text, tables and figures to a Document."""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import replace
from importlib import metadata
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..architecture import Architecture  # noqa: E402
from ..ramp import RampSchedule  # noqa: E402
from .stats import compare, kendall_tau, mean_std  # noqa: E402

HANDSET = "handset"


def _ramp_contenders(data) -> list[dict[str, Any]]:
    return [c for c in data.plan["contenders"] if c["kind"] == "ramp"]


def _seed_scores(data, name: str) -> list[float]:
    rows = data.results[data.results["name"] == name].sort_values("seed")
    return rows["top1"].tolist()


def build_contender(contender: dict[str, Any], img_size: int, num_classes: int):
    if contender["kind"] == "baseline":  # built for the data's image size, which the spec holds
        from ..baselines import BaselineSpec, build_baseline

        spec = BaselineSpec(**contender["baseline"])
        return build_baseline(replace(spec, kwargs={**spec.kwargs, "num_classes": num_classes}))
    from ..models import build_iformer

    arch = Architecture.from_dict(contender["architecture"])
    return build_iformer(**arch.build_kwargs(), ramp=contender["ramp"], img_size=img_size, num_classes=num_classes)


def _throughput(contender: dict[str, Any], img_size: int, batch: int = 32, repeats: int = 3) -> float:
    """Inference images per second of the model on this machine (fp32, eval), median of repeats."""
    import torch

    model = build_contender(contender, img_size, 10).eval()
    x = torch.randn(batch, 3, img_size, img_size)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def summary_section(doc, data) -> str:
    """Summary table and the one-line verdict (returned)."""
    doc.section("Summary")
    handset = _seed_scores(data, HANDSET)
    rows = []
    for c in data.plan["contenders"]:
        scores = _seed_scores(data, c["name"])
        mean, std = mean_std(scores) if scores else (math.nan, math.nan)
        over = c["kind"] == "baseline" and c["baseline"].get("over_budget")
        row = {"schedule": c["name"], "kind": "baseline (over budget: smallest config)" if over else c["kind"],
               "per-stage C_h/C": "",
               "params (M)": c["params"] / 1e6, "GFLOPs": c["flops"] / 1e9,
               "img/s (inference)": _throughput(c, data.space.img_size),
               "proxy top-1": c.get("proxy_score"), "full top-1 mean": mean, "full top-1 std": std,
               "seeds": len(scores), "Δ vs hand-set": math.nan, "95% CI": "", "p": math.nan}
        if c["kind"] == "ramp":
            arch = Architecture.from_dict(c["architecture"])
            row["per-stage C_h/C"] = " | ".join(RampSchedule(tuple(c["ramp"])).describe_stages(arch))
        if c["name"] != HANDSET and scores and handset:
            paired = len(scores) == len(handset)
            cmp = compare(scores, handset, paired=paired)
            row.update({"Δ vs hand-set": cmp.difference, "95% CI": f"[{cmp.ci_low:+.2f}, {cmp.ci_high:+.2f}]",
                        "p": cmp.p_value})
        rows.append(row)
    frame = pd.DataFrame(rows)
    verdict = _verdict(data, handset)
    doc.paragraph(verdict, css_class="verdict")
    doc.table(frame, "summary")
    doc.paragraph("Full top-1 is the last-epoch validation accuracy of the retraining, mean ± std over seeds; "
                  "the difference to the hand-set ramp uses a paired t-test over seeds (the same seeds for every "
                  "schedule) with its 95% confidence interval. FLOPs are fvcore multiply-adds at "
                  f"{data.space.img_size}px with a {data.space.budget.num_classes}-class head.")
    return verdict


def _verdict(data, handset: list[float]) -> str:
    best = _seed_scores(data, "best")
    if not best:
        return ("Verdict: the search found no within-budget schedule other than the hand-set ramp, "
                "so there is nothing to compare.")
    cmp = compare(best, handset, paired=len(best) == len(handset))
    contenders = {c["name"]: c for c in data.plan["contenders"]}
    gf_best, gf_hand = contenders["best"]["flops"] / 1e9, contenders[HANDSET]["flops"] / 1e9
    if cmp.significant:
        word = "better than" if cmp.difference > 0 else "worse than"
    else:
        word = "not significantly different from"
    ci = "no interval with one seed" if math.isinf(cmp.ci_low) else f"95% CI [{cmp.ci_low:+.2f}, {cmp.ci_high:+.2f}]"
    return (f"Verdict: the searched ramp is {word} the hand-set ramp: top-1 {cmp.mean_a:.2f} ± {cmp.std_a:.2f}% vs "
            f"{cmp.mean_b:.2f} ± {cmp.std_b:.2f}% (Δ {cmp.difference:+.2f} points, {ci}, "
            f"{cmp.test} p={cmp.p_value:.3g}, {cmp.n} seeds) at {gf_best:.4g} vs {gf_hand:.4g} GFLOPs.")


def ramp_section(doc, data) -> None:
    doc.section("Ramp")
    fig, ax = plt.subplots(figsize=(8, 4))
    rows = []
    for c in _ramp_contenders(data):
        arch = Architecture.from_dict(c["architecture"])
        ramp = RampSchedule(tuple(c["ramp"]))
        n = arch.num_blocks
        x = [(b + 0.5) / n for b in range(n)]
        style = {"color": "black", "linewidth": 2.5} if c["name"] == HANDSET else {}
        ax.step(x, ramp.ratios, where="mid", marker="o", markersize=3, label=c["name"], **style)
        for b, ((c_h, c_l), stage) in enumerate(zip(ramp.channels(arch), arch.block_stages)):
            rows.append({"schedule": c["name"], "block": b, "stage": stage + 1, "C_h/C": ramp.ratios[b],
                         "C_h": c_h, "C_l": c_l})
    ax.set(xlabel="normalized depth (block centre)", ylabel="C_h / C (high-frequency share)", ylim=(-0.05, 1.05),
           title="Frequency ramp per block")
    ax.legend()
    doc.figure(fig, "ramp", "Per-block C_h/C of the retrained schedules; the hand-set ramp in black.")
    doc.table(pd.DataFrame(rows), "ramps")


def search_section(doc, data) -> None:
    doc.section("Search")
    trials = data.trials
    if trials.empty:
        doc.paragraph("No trials.csv in the run directory.")
        return
    counts = trials["state"].value_counts().rename_axis("state").reset_index(name="trials")
    doc.table(counts, "trial_counts")
    complete = trials[trials["state"] == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter(complete["number"], complete["value"], label="complete", zorder=3)
    pruned = trials[trials["state"] == "PRUNED"]
    last_top1 = pruned.filter(regex=r"^top1_e\d+$").ffill(axis=1).iloc[:, -1] if not pruned.empty else []
    if len(pruned):
        ax.scatter(pruned["number"], last_top1, marker="x", color="gray", label="pruned (last epoch)")
    ax.plot(complete["number"], complete["value"].cummax(), color="C1", label="best so far")
    baseline = complete[complete["baseline"]]
    ax.scatter(baseline["number"], baseline["value"], s=120, facecolors="none", edgecolors="black",
               label="hand-set ramp")
    ax.set(xlabel="trial", ylabel="proxy top-1 (%)", title="Optimization history")
    ax.legend()
    doc.figure(fig, "history", "Proxy top-1 per trial; over-budget candidates never trained and are not shown.")

    fig, ax = plt.subplots(figsize=(8, 4))
    feasible = complete[~complete["baseline"]]
    ax.scatter(feasible["flops"] / 1e9, feasible["value"], label="trained candidates")
    ax.scatter(baseline["flops"] / 1e9, baseline["value"], color="black", marker="*", s=160, label="hand-set ramp")
    over = trials[trials["state"] == "OVER_BUDGET"]
    if len(over):
        ax.scatter(over["flops"] / 1e9, [ax.get_ylim()[0]] * len(over), marker="|", color="red",
                   label="rejected over budget (not trained)")
    front = _pareto(complete)
    if len(front):
        ax.plot(front["flops"] / 1e9, front["value"], color="C2", drawstyle="steps-post", label="Pareto front")
    if data.space.budget.gflops:
        ax.axvline(data.space.budget.gflops, color="red", linestyle="--", label="budget")
    ax.set(xlabel="GFLOPs (fvcore)", ylabel="proxy top-1 (%)", title="Accuracy vs FLOPs")
    ax.legend(fontsize=8)
    doc.figure(fig, "pareto", "Pareto front of proxy accuracy vs FLOPs, with the budget line.")

    try:
        import optuna

        importances = optuna.importance.get_param_importances(
            data.study, target=lambda t: t.values[0]) if len(data.study.directions) > 1 \
            else optuna.importance.get_param_importances(data.study)
        frame = pd.DataFrame({"parameter": list(importances), "importance": list(importances.values())})
        doc.table(frame, "param_importances")
        doc.paragraph("Parameter importances: Optuna's default evaluator over the complete trials.")
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        doc.paragraph(f"Parameter importances not available: {exc}")


def _pareto(complete: pd.DataFrame) -> pd.DataFrame:
    ordered = complete.sort_values(["flops", "value"], ascending=[True, False])
    best, keep = -math.inf, []
    for idx, row in ordered.iterrows():
        if row["value"] > best:
            keep.append(idx)
            best = row["value"]
    return ordered.loc[keep]


def proxy_fidelity_section(doc, data) -> None:
    doc.section("Proxy fidelity")
    rows = []
    for c in _ramp_contenders(data):
        scores = _seed_scores(data, c["name"])
        if c.get("proxy_score") is not None and scores:
            rows.append({"schedule": c["name"], "proxy top-1": c["proxy_score"],
                         "full top-1 mean": float(np.mean(scores))})
    frame = pd.DataFrame(rows)
    if len(frame) < 2:
        doc.paragraph("Fewer than two retrained schedules have a proxy score: no ranking to compare.")
        return
    tau, p = kendall_tau(frame["proxy top-1"], frame["full top-1 mean"])
    note = (" With two schedules τ is ±1 by construction; retrain more (--top K) for a real test."
            if len(frame) == 2 else "")
    doc.paragraph(f"Kendall τ between proxy and full-retraining scores over {len(frame)} schedules: "
                  f"{tau:+.2f} (p={p:.3g}).{note}")
    doc.table(frame, "proxy_fidelity")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(frame["proxy top-1"], frame["full top-1 mean"])
    for _, row in frame.iterrows():
        ax.annotate(row["schedule"], (row["proxy top-1"], row["full top-1 mean"]))
    ax.set(xlabel="proxy top-1 (%)", ylabel="full retraining top-1 (%)",
           title="Does the proxy rank like full training?")
    doc.figure(fig, "proxy_fidelity", "Proxy score vs full-retraining score per schedule.")


def training_curves_section(doc, data) -> None:
    doc.section("Training curves")
    fig, (top, bottom) = plt.subplots(1, 2, figsize=(10, 4))
    rows = []
    for name, seeds in data.histories.items():
        if not seeds or not seeds[0]:
            continue
        epochs = [h["epoch"] for h in seeds[0]]
        for metric, ax in (("top1", top), ("train_loss", bottom)):
            curves = np.array([[h.get(metric, np.nan) for h in run] for run in seeds if len(run) == len(epochs)])
            mean = curves.mean(axis=0)
            ax.plot(epochs, mean, label=name, **({"color": "black"} if name == HANDSET else {}))
            ax.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), alpha=0.15)
            rows += [{"schedule": name, "metric": metric, "epoch": e, "mean": m} for e, m in zip(epochs, mean)]
    top.set(xlabel="epoch", ylabel="validation top-1 (%)")
    bottom.set(xlabel="epoch", ylabel="training loss")
    top.legend()
    doc.figure(fig, "curves", "Retraining curves, mean over seeds (band: min-max).")
    doc.table(pd.DataFrame(rows), "curves")


def frequency_section(doc, data, n_images: int) -> None:
    """Per-block relative log amplitude at the highest frequency, from each schedule's seed-0 weights."""
    from .spectra import trained_profiles

    doc.section("Frequency analysis")
    profiles = trained_profiles(data, n_images)
    if not profiles:
        doc.paragraph("No trained weights found to analyse.")
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    rows = []
    for name, values in profiles.items():
        n = len(values)
        x = [(b + 0.5) / n for b in range(n)]
        ax.plot(x, values, marker="o", label=name, **({"color": "black"} if name == HANDSET else {}))
        rows += [{"schedule": name, "block": b, "relative log amplitude at pi": v} for b, v in enumerate(values)]
    ax.set(xlabel="normalized depth", ylabel="Δ log amplitude (π vs 0)",
           title="High-frequency energy kept by each block")
    ax.legend()
    doc.figure(fig, "frequency", "Relative log amplitude of the Fourier-transformed block outputs at the highest "
                                 "frequency (higher keeps more high-frequency detail), on validation images.")
    doc.table(pd.DataFrame(rows), "frequency")


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
        "search space": data.space.source, "study": search.get("study"), "storage": search.get("storage"),
        "backend": search.get("backend"), "search started": search.get("started"),
        "search seconds": search.get("seconds"), "sampler seed": data.space.search["seed"],
        "retraining": data.plan["settings"],
        "retraining seconds (sum over runs)": round(data.results["seconds"].sum(), 1),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPUs, {_gpu()}", "python": platform.python_version(),
        **{f"version {k}": v for k, v in versions.items()}, **extra,
    }
    doc.table(pd.DataFrame({"item": list(info), "value": [json.dumps(v) if isinstance(v, dict) else str(v)
                                                          for v in info.values()]}), "metadata")
    commands = [" ".join(search.get("command", []))] + data.plan.get("commands", [])
    doc.paragraph("Commands (storage passwords redacted):")
    doc.code("\n".join(c for c in commands if c))


def _gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
