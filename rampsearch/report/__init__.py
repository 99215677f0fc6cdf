"""The comparison report of a run: searched schedules vs the hand-set ramp, in HTML and Markdown.

`build_report(run_dir, out_dir)` reads the run directory (space.yaml, the study, trials.csv,
retrain/plan.json, retrain/results.csv and each run's result.json) and writes report.html
(self-contained: images inlined, opens offline), report.md with its PNG figures, and every table
as CSV. Sections: Summary, Ramp, Search, Proxy fidelity, Training curves, Frequency analysis,
Run metadata. Nothing is written until the run directory has been read and found complete: a
missing or unfinished run is a UserError, and no report directory is left behind.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..checkpoint import read_json
from ..errors import UserError, ensure_directory
from .document import Document

# Columns of retrain/results.csv the report reads.
RESULT_COLUMNS = ("name", "kind", "seed", "top1", "seconds")


@dataclass
class RunData:
    """Everything the sections read, loaded and checked once."""

    run_dir: Path
    space: Any
    study: Any
    trials: pd.DataFrame
    plan: dict[str, Any]
    results: pd.DataFrame
    histories: dict[str, list[list[dict[str, float]]]] = field(default_factory=dict)  # name -> per seed, in order


def _read_json(path: Path, what: str, run_dir: Path) -> Any:
    return read_json(path, what, fix=f"rerun `rampsearch retrain {run_dir}`")


def _read_results(path: Path, run_dir: Path) -> pd.DataFrame:
    """retrain/results.csv with at least one row and the columns the report reads."""
    if not path.is_file():
        raise UserError(f"{run_dir} has no retraining results ({path} is missing); "
                        f"run `rampsearch retrain {run_dir}` first")
    try:
        results = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a results table ({exc}); rerun `rampsearch retrain {run_dir}`") from None
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if results.empty or missing:
        problem = f"lacks the columns {missing}" if missing else "has no rows"
        raise UserError(f"{path} {problem}; rerun `rampsearch retrain {run_dir}`")
    return results


def _read_plan(path: Path, run_dir: Path) -> dict[str, Any]:
    """retrain/plan.json, which names every contender, the hand-set ramp first among them."""
    if not path.is_file():
        raise UserError(f"{run_dir} has no retraining plan ({path} is missing); rerun `rampsearch retrain {run_dir}`")
    plan = _read_json(path, "retraining plan", run_dir)
    if not isinstance(plan, dict) or not {"settings", "contenders"} <= set(plan) or \
            not any(c.get("name") == "handset" for c in plan["contenders"]):
        raise UserError(f"{path} is not a retraining plan with the hand-set ramp; rerun `rampsearch retrain {run_dir}`")
    return plan


def load_run_data(run_dir: Path, storage: str | None = None) -> RunData:
    """Read and check the run directory; a missing or unfinished run is a UserError naming what to do."""
    from ..search.study import load_run

    space, study = load_run(run_dir, storage)
    retrain = run_dir / "retrain"
    results = _read_results(retrain / "results.csv", run_dir)
    plan = _read_plan(retrain / "plan.json", run_dir)
    histories = {name: [_read_json(retrain / name / f"seed{seed}" / "result.json", "retraining result",
                                   run_dir).get("history", []) for seed in sorted(rows["seed"])]
                 for name, rows in results.groupby("name", sort=False)}
    trials = pd.read_csv(run_dir / "trials.csv") if (run_dir / "trials.csv").exists() else pd.DataFrame()
    return RunData(run_dir, space, study, trials, plan, results, histories)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, storage: str | None = None,
                 frequency_images: int = 64, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the report; return its paths and the one-line verdict; `log` gets the progress lines."""
    # matplotlib and torch load only when a report is written, not whenever the CLI starts
    from .sections import (frequency_section, metadata_section, proxy_fidelity_section, ramp_section,
                           search_section, summary_section, training_curves_section)

    say = log or (lambda message: None)
    run_dir = Path(run_dir)
    data = load_run_data(run_dir, storage)  # before anything is written
    out_dir = ensure_directory(Path(out_dir) if out_dir else run_dir / "report", "report directory")
    doc = Document(f"rampsearch report: {data.space.name}", out_dir)
    started = time.perf_counter()
    say(f"report: summary, ramp and search of {run_dir}")
    verdict = summary_section(doc, data)
    ramp_section(doc, data)
    search_section(doc, data)
    proxy_fidelity_section(doc, data)
    training_curves_section(doc, data)
    say(f"report: frequency analysis on {frequency_images} validation images")
    frequency_section(doc, data, frequency_images)
    metadata_section(doc, data, extra={"report_seconds": round(time.perf_counter() - started, 1),
                                       "report_machine": platform.platform()})
    paths = doc.write()
    say(f"report: wrote {len(paths['tables'])} tables to {out_dir}")
    return {"html": str(paths["html"]), "markdown": str(paths["markdown"]), "verdict": verdict,
            "tables": [str(p) for p in paths["tables"]]}
