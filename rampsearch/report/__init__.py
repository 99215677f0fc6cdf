"""The comparison report of a run: searched schedules vs the hand-set ramp, in HTML and Markdown.

`build_report(run_dir, out_dir)` reads the run directory (space.yaml, the study, trials.csv,
RETRAIN_DIR/plan.json, RETRAIN_DIR/results.csv and each run's result.json; RETRAIN_DIR is retrain/,
or retrain-NAME-SIZE/ for a target, rampsearch.transfer) and writes report.html (self-contained:
images inlined, opens offline), report.md with its PNG figures, and every table as CSV. Sections:
Summary, Ramp, Transfer (with a target), Search, Proxy (or transfer) fidelity, Training curves,
Frequency analysis, Run metadata. Nothing is written until the run directory has been read and found complete: a
missing or unfinished run is a UserError, and no report directory is left behind.
"""
from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..checkpoint import read_json
from ..errors import UserError, ensure_directory
from .document import Document

DIGEST_CHARS = 16  # hex characters of a SHA-256 kept in the metadata: enough to tell versions apart


def report_code_digest() -> str:
    """SHA-256 over this package's source files, subpackages included (relative path and bytes, in path order):
    which report code wrote a report. The run metadata records it, so a committed report made by other code is
    caught."""
    digest, package = hashlib.sha256(), Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:DIGEST_CHARS]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (the search space a report was made from), shortened like the code's."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:DIGEST_CHARS]


# Columns of RETRAIN_DIR/results.csv the report reads.
RESULT_COLUMNS = ("name", "kind", "seed", "top1", "seconds")


@dataclass
class RunData:
    """Everything the sections read, loaded and checked once."""

    run_dir: Path
    retrain: Path  # the retraining's folder: RUN_DIR/retrain, or RUN_DIR/retrain-NAME-SIZE for a target
    space: Any
    study: Any
    trials: pd.DataFrame
    plan: dict[str, Any]
    results: pd.DataFrame
    histories: dict[str, list[list[dict[str, float]]]] = field(default_factory=dict)  # name -> per seed, in order
    stopping: dict[str, Any] | None = None  # RETRAIN_DIR/stopping.json of `seeds: auto` (rampsearch.retrain)

    @property
    def target(self) -> dict[str, Any] | None:
        """The retraining's target (rampsearch.transfer.Transfer.to_dict()); None: the searched architecture."""
        return self.plan.get("target")

    @property
    def img_size(self) -> int:
        """The input size the retrained models ran at (and their FLOPs are counted at)."""
        return self.target["img_size"] if self.target else self.space.img_size

    @property
    def variant(self) -> str | None:
        """The paper variant the retrained models are, for per-variant recipe values."""
        return self.target["architecture"].get("variant") if self.target else self.space.base.variant


def _read_json(path: Path, what: str, command: str) -> Any:
    return read_json(path, what, fix=f"rerun `{command}`")


def _read_results(path: Path, command: str) -> pd.DataFrame:
    """RETRAIN_DIR/results.csv with at least one row and the columns the report reads."""
    if not path.is_file():
        raise UserError(f"{path.parent.parent} has no retraining results ({path} is missing); run `{command}` first")
    try:
        results = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a results table ({exc}); rerun `{command}`") from None
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if results.empty or missing:
        problem = f"lacks the columns {missing}" if missing else "has no rows"
        raise UserError(f"{path} {problem}; rerun `{command}`")
    return results


def _read_plan(path: Path, command: str) -> dict[str, Any]:
    """RETRAIN_DIR/plan.json, which names every contender, the hand-set ramp first among them."""
    if not path.is_file():
        raise UserError(f"{path.parent.parent} has no retraining plan ({path} is missing); rerun `{command}`")
    plan = _read_json(path, "retraining plan", command)
    if not isinstance(plan, dict) or not {"settings", "contenders"} <= set(plan) or \
            not any(c.get("name") == "handset" for c in plan["contenders"]):
        raise UserError(f"{path} is not a retraining plan with the hand-set ramp; rerun `{command}`")
    return plan


def load_run_data(run_dir: Path, storage: str | None = None, target: str | None = None,
                  img_size: int | None = None) -> RunData:
    """Read and check the run directory; a missing or unfinished run is a UserError naming what to do.

    `target`, `img_size`: which retraining (rampsearch.transfer.resolve_target)."""
    from ..search.load import load_run
    from ..sequential import STOPPING
    from ..transfer import check_retraining_found, resolve_target, retrain_command, retrain_dir

    space, study = load_run(run_dir, storage)
    retrain = retrain_dir(run_dir, resolve_target(space, target, img_size))
    check_retraining_found(run_dir, retrain, target)
    command = retrain_command(run_dir, target, img_size)
    results = _read_results(retrain / "results.csv", command)
    plan = _read_plan(retrain / "plan.json", command)
    histories = {name: [_read_json(retrain / name / f"seed{seed}" / "result.json", "retraining result",
                                   command).get("history", []) for seed in sorted(rows["seed"])]
                 for name, rows in results.groupby("name", sort=False)}
    trials = pd.read_csv(run_dir / "trials.csv") if (run_dir / "trials.csv").exists() else pd.DataFrame()
    stopping = (_read_json(retrain / STOPPING, "seeds: auto stopping record", command)
                if (retrain / STOPPING).is_file() else None)
    return RunData(run_dir, retrain, space, study, trials, plan, results, histories, stopping)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, storage: str | None = None,
                 frequency_images: int = 64, log: Callable[[str], None] | None = None, target: str | None = None,
                 img_size: int | None = None) -> dict[str, Any]:
    """Write the report (default: RUN_DIR/report, or RUN_DIR/report-NAME-SIZE for a target); return its paths
    and the one-line verdict; `log` gets the progress lines; `target`, `img_size` pick the retraining."""
    # matplotlib and torch load only when a report is written, not whenever the CLI starts
    from .sections import (frequency_section, metadata_section, proxy_fidelity_section, ramp_section,
                           search_section, summary_section, training_curves_section, transfer_section)

    say = log or (lambda message: None)
    run_dir = Path(run_dir)
    data = load_run_data(run_dir, storage, target, img_size)  # before anything is written
    default_out = run_dir / data.retrain.name.replace("retrain", "report", 1)
    out_dir = ensure_directory(Path(out_dir) if out_dir else default_out, "report directory")
    doc = Document(f"rampsearch report: {data.space.name}", out_dir)
    started = time.perf_counter()
    say(f"report: summary, ramp and search of {run_dir}")
    verdict = summary_section(doc, data)
    ramp_section(doc, data)
    transfer_section(doc, data)
    search_section(doc, data)
    proxy_fidelity_section(doc, data)
    training_curves_section(doc, data)
    say(f"report: frequency analysis on {frequency_images} validation images")
    frequency_section(doc, data, frequency_images)
    metadata_section(doc, data, extra={"report_seconds": round(time.perf_counter() - started, 1),
                                       "report_machine": platform.platform(), "report code": report_code_digest(),
                                       "space sha256": file_digest(run_dir / "space.yaml")})
    paths = doc.write()
    say(f"report: wrote {len(paths['tables'])} tables to {out_dir}")
    return {"html": str(paths["html"]), "markdown": str(paths["markdown"]), "verdict": verdict,
            "tables": [str(p) for p in paths["tables"]]}
