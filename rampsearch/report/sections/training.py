"""The sections on the retrained models themselves: Training curves and Frequency analysis."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from ..spectra import trained_profiles
from .common import WIDE, draw_stage_boundaries, legend_outside, ramp_specs, schedule_colours


def training_curves_section(doc, data) -> None:
    doc.section("Training curves")
    colours = schedule_colours(data)
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
    legend_outside(fig, top)
    band = "band: min-max over seeds, in the line's colour" if banded else "one seed: no band"
    doc.figure(fig, "curves", f"Retraining curves, mean over seeds ({band}).")
    doc.table(pd.DataFrame(rows), "curves")


def frequency_section(doc, data, n_images: int) -> None:
    """Per-block relative log amplitude at the highest frequency, from each schedule's seed-0 weights."""
    doc.section("Frequency analysis")
    profiles = trained_profiles(data, n_images)
    if not profiles:
        doc.paragraph("No trained weights found to analyse.")
        return
    specs, colours = ramp_specs(data), schedule_colours(data)
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    rows = []
    for name, values in profiles.items():
        n = len(values)
        ax.plot([(b + 0.5) / n for b in range(n)], values, marker="o", color=colours[name], label=name)
        rows += [{"schedule": name, "block": b, "relative log amplitude at pi": v} for b, v in enumerate(values)]
    draw_stage_boundaries(ax, {name: specs[name].architecture for name in profiles}, colours)
    ax.set(xlabel="normalized depth (block centre)", ylabel="Δ log amplitude (π vs 0)", xlim=(0, 1),
           title="High-frequency energy kept by each block")
    legend_outside(fig, ax)
    doc.figure(fig, "frequency", "Relative log amplitude of the Fourier-transformed block outputs at the highest "
                                 "frequency (higher keeps more high-frequency detail), on validation images; dashed "
                                 "lines mark the stage boundaries.")
    doc.table(pd.DataFrame(rows), "frequency")
