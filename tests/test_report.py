"""`rampsearch run` end to end on a tiny space, and the report it writes."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
SECTIONS = ["Summary", "Ramp", "Search", "Proxy fidelity", "Training curves", "Frequency analysis", "Run metadata"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One real `run` (search → retrain → report) shared by the tests of this file."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", str(TINY), "--out", str(out), "--quiet"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out / 'report' / 'report.html'} (Markdown" in result.stdout
    assert "Verdict:" in result.stdout
    return out


def test_run_writes_every_step(run_dir):
    for name in ("trials.csv", "trials.parquet", "best.yaml", "space.yaml", "search.json", "retrain/results.csv",
                 "retrain/plan.json", "report/report.html", "report/report.md"):
        assert (run_dir / name).exists(), name
    plan = json.loads((run_dir / "retrain" / "plan.json").read_text())
    names = [c["name"] for c in plan["contenders"]]
    assert names[0] == "handset" and "best" in names
    assert (run_dir / "retrain" / "handset" / "seed1" / "model.safetensors").exists()


def test_report_has_every_section_and_table(run_dir):
    md = (run_dir / "report" / "report.md").read_text()
    html = (run_dir / "report" / "report.html").read_text()
    for title in SECTIONS:
        assert f"## {title}" in md and f">{title}</h2>" in html
    for table in ("summary", "ramps", "trial_counts", "curves", "frequency", "metadata"):
        assert (run_dir / "report" / f"{table}.csv").exists(), table
    assert "Verdict:" in md and "95% CI" in md and "Kendall τ" in md


def test_html_is_self_contained(run_dir):
    html = (run_dir / "report" / "report.html").read_text()
    assert not re.search(r'src="(?!data:)', html) and "http" not in html.split("<body>")[1]
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 5
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_html_loads_in_headless_chromium(run_dir, tmp_path):
    page = run_dir / "report" / "report.html"
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CONSOLE" not in result.stderr and "Uncaught" not in result.stderr
    for title in SECTIONS:
        assert f">{title}</h2>" in result.stdout
    assert result.stdout.count("<img") >= 5


def test_rerunning_resumes_without_retraining(run_dir):
    before = (run_dir / "retrain" / "results.csv").read_text()
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "retrain", str(run_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "done earlier" in result.stdout and "training" not in result.stdout
    assert (run_dir / "retrain" / "results.csv").read_text() == before


def test_report_of_an_unretrained_run_says_what_to_do(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "report", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "not a search run directory" in result.stderr and "Traceback" not in result.stderr


def test_baselines_are_retrained_and_reported(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("retrain", "report"))
    for command in (["retrain", str(run), "--baselines", "--seeds", "1", "--top", "1"], ["report", str(run)]):
        result = subprocess.run([sys.executable, str(ROOT / "cli.py"), *command], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    summary = (run / "report" / "summary.csv").read_text()
    for family in ("deit", "crossvit", "t2t"):
        assert f"\n{family},baseline" in summary
