"""The Ramp section (every retrained schedule's per-block C_h/C) and, with a target, the Transfer section."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ...architecture import Architecture
from ...ramp import RampSchedule
from .common import (HANDSET, WIDE, draw_stage_boundaries, legend_outside, ramp_specs, schedule_colours, stages_text,
                     target_words)


def ramp_section(doc, data) -> None:
    doc.section("Ramp")
    specs, colours = ramp_specs(data), schedule_colours(data)
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
    legend_outside(fig, ax)
    doc.figure(fig, "ramp", "Per-block C_h/C of the retrained schedules, the hand-set ramp in black; dashed "
                            "lines mark the stage boundaries.")
    doc.table(pd.DataFrame(rows), "ramps")


def transfer_section(doc, data) -> None:
    """With a target: each schedule as searched and as mapped onto the target, side by side, with the target's
    costs and what the mapping did (rampsearch.transfer). Nothing without a target."""
    target = data.target
    if not target:
        return
    from ...flops import flops_model
    from ...search.space import Budget
    from ...transfer import describe_budget

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
    specs, colours = ramp_specs(data), schedule_colours(data)
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
        rows.append({"schedule": name, "searched C_h/C": stages_text(searched_arch, searched),
                     "searched GFLOPs": proxy_flops / 1e9,
                     "target C_h/C": stages_text(spec.architecture, spec.ramp),
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
