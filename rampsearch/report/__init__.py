"""The comparison report of a run: searched schedules vs the hand-set ramp, in HTML and Markdown.

`build_report(run_dir, out_dir)` reads the run directory (space.yaml, the study, trials.csv,
retrain/) and writes report.html (self-contained: images inlined, opens offline), report.md with
its PNG figures, and every table as CSV. Sections: Summary, Ramp, Search, Proxy fidelity,
Training curves, Frequency analysis, Run metadata.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserError
from .document import Document
from .sections import (frequency_section, metadata_section, proxy_fidelity_section, ramp_section, search_section,
                       summary_section, training_curves_section)


@dataclass
class RunData:
    """Everything the sections read, loaded once."""

    run_dir: Path
    space: Any
    study: Any
    trials: pd.DataFrame
    plan: dict[str, Any]
    results: pd.DataFrame
    histories: dict[str, list[list[dict[str, float]]]] = field(default_factory=dict)  # name -> per seed


def load_run_data(run_dir: Path, storage: str | None = None) -> RunData:
    from ..retrain import load_run

    space, study = load_run(run_dir, storage)
    retrain = run_dir / "retrain"
    if not (retrain / "results.csv").exists():
        raise UserError(f"{run_dir} has no retraining results; run `rampsearch retrain {run_dir}` first")
    plan = json.loads((retrain / "plan.json").read_text())
    results = pd.read_csv(retrain / "results.csv")
    histories: dict[str, list[list[dict[str, float]]]] = {}
    for name in results["name"].unique():
        seeds = sorted((retrain / name).glob("seed*/result.json"))
        histories[name] = [json.loads(p.read_text()).get("history", []) for p in seeds]
    trials = pd.read_csv(run_dir / "trials.csv") if (run_dir / "trials.csv").exists() else pd.DataFrame()
    return RunData(run_dir, space, study, trials, plan, results, histories)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, storage: str | None = None,
                 frequency_images: int = 64) -> dict[str, Any]:
    """Write the report; return its paths and the one-line verdict."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_run_data(run_dir, storage)
    doc = Document(f"rampsearch report: {data.space.name}", out_dir)
    started = time.perf_counter()
    verdict = summary_section(doc, data)
    ramp_section(doc, data)
    search_section(doc, data)
    proxy_fidelity_section(doc, data)
    training_curves_section(doc, data)
    frequency_section(doc, data, frequency_images)
    metadata_section(doc, data, extra={"report_seconds": round(time.perf_counter() - started, 1),
                                       "report_machine": platform.platform()})
    paths = doc.write()
    return {"html": str(paths["html"]), "markdown": str(paths["markdown"]), "verdict": verdict,
            "tables": [str(p) for p in paths["tables"]]}
