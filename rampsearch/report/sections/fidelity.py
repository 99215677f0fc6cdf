"""The Proxy (or transfer) fidelity section: does the search rank the schedules as their retraining does?"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..stats import kendall_tau
from .common import SQUARE, method_words, retrain_name, schedule_colours, seed_scores


def proxy_fidelity_section(doc, data) -> None:
    """Kendall τ between the search's scores and the retraining's (on a target: transfer fidelity)."""
    doc.section("Transfer fidelity" if data.target else "Proxy fidelity")
    name, score = retrain_name(data), data.space.score
    retrained = f"{name.short} top-1 mean"
    rows = []
    for c in data.plan["contenders"]:
        scores = seed_scores(data, c["name"])
        if c["kind"] == "ramp" and c.get("proxy_score") is not None and scores:
            rows.append({"schedule": c["name"], score.short: c["proxy_score"], retrained: float(np.mean(scores))})
    frame = pd.DataFrame(rows)
    if len(frame) < 2:
        doc.paragraph("Fewer than two retrained schedules have a search score: no ranking to compare.")
        return
    # a better score ranks higher on both sides, so a positive τ is agreement whatever the search ranked by
    tau, p = kendall_tau(-score.sort_key(frame[score.short]), frame[retrained])
    between = (f"Kendall τ between {method_words(data).scores} and the {name.long} (standalone trainings) over "
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
    colours = schedule_colours(data)
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
