"""`rampsearch run` end to end on a tiny space, and the report it writes."""
from __future__ import annotations

import base64
import html as html_lib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import Collection, PolyCollection
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D

from rampsearch.errors import UserError
from rampsearch.report import RunData, build_report
from rampsearch.report.document import Document
from rampsearch.report.stats import detectable_difference
from rampsearch.report.sections.common import retrain_name
from rampsearch.report.sections.search import (MIN_TRIALS_FOR_IMPORTANCE, TOP_TRIALS, best_so_far, history_figure,
                                               top_trials)
from rampsearch.search.load import load_space

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
SECTIONS = ["Summary", "Ramp", "Search", "Proxy fidelity", "Training curves", "Frequency analysis", "Run metadata"]
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FEW_IMAGES = 8  # frequency analysis in the in-process reports: enough to run it, cheap on a CPU


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


@pytest.fixture(scope="module")
def figures(run_dir, tmp_path_factory) -> dict:
    """The report's figures by name, captured as the report hands them to the document (in-process build)."""
    captured = {}
    original = Document.figure

    def capture(self, fig, name, caption):
        captured[name] = fig
        original(self, fig, name, caption)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Document, "figure", capture)
        build_report(run_dir, tmp_path_factory.mktemp("figures"), frequency_images=FEW_IMAGES)
    return captured


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("report"))
    return run


def _edit_plan(run: Path, edit) -> None:
    path = run / "retrain" / "plan.json"
    plan = json.loads(path.read_text())
    edit(plan)
    path.write_text(json.dumps(plan))


def _summary_md(report_dir: Path) -> str:
    md = (report_dir / "report.md").read_text()
    return md.split("## Summary", 1)[1].split("## Ramp", 1)[0]


# -- the run and the report's shape -------------------------------------------------------------

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
    for table in ("summary", "ramps", "trial_counts", "top_trials", "curves", "frequency", "metadata"):
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
        [*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CONSOLE" not in result.stderr and "Uncaught" not in result.stderr
    for title in SECTIONS:
        assert f">{title}</h2>" in result.stdout
    assert result.stdout.count("<img") >= 5


# Measures the laid-out page in the browser and leaves the numbers on <body> for --dump-dom.
WIDTH_PROBE = """<script>document.body.setAttribute("data-widths", JSON.stringify({
  page: document.documentElement.scrollWidth, view: document.documentElement.clientWidth,
  tables: Array.from(document.querySelectorAll("table")).map(t => [t.scrollWidth, t.parentElement.clientWidth])
}));</script>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_is_readable_700px_wide(run_dir, tmp_path):
    """At 700 px the page never scrolls sideways and the summary's tables fit without their own scrollbar."""
    probe = tmp_path / "probe.html"
    probe.write_text((run_dir / "report" / "report.html").read_text().replace("</body>", WIDTH_PROBE + "</body>"))
    result = subprocess.run([*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=700,900",
                             "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    widths = json.loads(html_lib.unescape(re.search(r'data-widths="([^"]*)"', result.stdout)[1]))
    assert 600 < widths["view"] <= 700 and widths["page"] <= widths["view"], widths
    summary_tables = widths["tables"][:2]  # the summary's two views come first
    assert all(table <= box for table, box in summary_tables), widths


def test_rerunning_resumes_without_retraining(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path)  # the other tests read the shared run as `run` left it
    before = (run / "retrain" / "results.csv").read_text()
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "retrain", str(run)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "done earlier" in result.stdout and "training" not in result.stdout
    assert (run / "retrain" / "results.csv").read_text() == before


# -- 13: nothing is written until the input is valid ----------------------------------------------

def test_report_of_an_unretrained_run_says_what_to_do(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "report", str(tmp_path), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "not a search run directory" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_report_creates_nothing_until_the_run_is_valid(run_dir, tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(UserError, match="not a search run directory"):
        build_report(missing)
    assert not missing.exists()
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("retrain", "report"))
    with pytest.raises(UserError, match="no retraining results"):
        build_report(run)
    (run / "retrain").mkdir()
    (run / "retrain" / "results.csv").write_text("")
    with pytest.raises(UserError, match="rampsearch retrain"):
        build_report(run)
    (run / "retrain" / "results.csv").write_text("name,kind,seed,top1,seconds\n")
    with pytest.raises(UserError, match="no rows"):
        build_report(run)
    assert not (run / "report").exists()


def test_quiet_prints_only_the_outcome(run_dir, tmp_path):
    command = [sys.executable, str(ROOT / "cli.py"), "report", str(run_dir), "--out"]
    loud = subprocess.run([*command, str(tmp_path / "loud")], capture_output=True, text=True, timeout=300)
    quiet = subprocess.run([*command, str(tmp_path / "quiet"), "--quiet"], capture_output=True, text=True,
                           timeout=300)
    assert loud.returncode == quiet.returncode == 0, loud.stderr[-2000:] + quiet.stderr[-2000:]
    assert "report: frequency analysis" in loud.stdout
    lines = quiet.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("report: ") and lines[1].startswith("Verdict:")


# -- the summary and its verdict ------------------------------------------------------------------

def test_retraining_is_named_after_its_recipe(run_dir):
    space = load_space(TINY)

    def name(settings, target=None):
        return retrain_name(RunData(run_dir, run_dir / "retrain", space, None, pd.DataFrame(),
                                    {"settings": settings, "target": target}, pd.DataFrame()))

    assert name({"recipe": "proxy", "epochs": 6}).long == "6-epoch proxy retrain"
    assert name({"recipe": "proxy", "epochs": None}).long == "3-epoch proxy retrain"  # proxy.yaml
    assert name({"recipe": "paper", "epochs": 300}).short == "paper retrain"
    full = name({"recipe": "paper", "epochs": None})
    assert full.short == "full" and "310 epochs" in full.long
    small = {"name": "small", "architecture": {"variant": "small"}, "img_size": 224}
    assert name({"recipe": "proxy", "epochs": 6}, small).long == "6-epoch proxy retrain on iFormer-small at 224 px"
    md = (run_dir / "report" / "report.md").read_text()  # tiny retrains 2 epochs of the proxy recipe
    assert "in the 2-epoch proxy retrain" in md and "| proxy retrain top-1 |" in md and "full top-1" not in md
    assert "proxy retrain top-1 mean" in (run_dir / "report" / "summary.csv").read_text()


def test_inference_throughput_is_read_from_retraining(run_dir):
    plan = json.loads((run_dir / "retrain" / "plan.json").read_text())
    summary = pd.read_csv(run_dir / "report" / "summary.csv")
    measured = {c["name"]: c["inference_img_s"] for c in plan["contenders"]}
    assert dict(zip(summary["schedule"], summary["img/s"])) == measured


def test_test_is_named_as_run(run_dir, tmp_path):
    summary = pd.read_csv(run_dir / "report" / "summary.csv")  # 2 seeds each: paired
    assert set(summary["test"].dropna()) == {"paired t"}
    assert "paired t p=" in _summary_md(run_dir / "report")
    run = _copy_run(run_dir, tmp_path)  # a third seed for "best" only: the seeds no longer pair up
    results = pd.read_csv(run / "retrain" / "results.csv")
    extra = results[(results["name"] == "best") & (results["seed"] == 1)].assign(seed=2, top1=lambda f: f["top1"] + 3)
    pd.concat([results, extra]).to_csv(run / "retrain" / "results.csv", index=False)
    shutil.copytree(run / "retrain" / "best" / "seed1", run / "retrain" / "best" / "seed2")
    outcome = build_report(run, frequency_images=FEW_IMAGES)
    assert "Welch t p=" in outcome["verdict"] and "paired" not in outcome["verdict"]
    summary = pd.read_csv(run / "report" / "summary.csv").set_index("schedule")
    assert summary.loc["best", "test"] == "Welch t"


def test_one_seed_says_no_test(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path)
    results = pd.read_csv(run / "retrain" / "results.csv")
    results[results["seed"] == 0].to_csv(run / "retrain" / "results.csv", index=False)
    outcome = build_report(run, frequency_images=FEW_IMAGES)
    summary = _summary_md(run / "report")
    assert "With 1 seed this run cannot detect a difference of any size" in outcome["verdict"]
    for text in (outcome["verdict"], summary):
        assert "no test (1 seed)" in text
        assert "±" not in text.replace("mean ± std", "") and "p=1" not in text and "[-inf" not in text
    frame = pd.read_csv(run / "report" / "summary.csv").set_index("schedule")
    assert frame.loc["best", "test"] == "no test (1 seed)" and np.isnan(frame.loc["best", "p"])


def test_every_comparison_says_what_it_could_detect(run_dir):
    summary = pd.read_csv(run_dir / "report" / "summary.csv").set_index("schedule")
    results = pd.read_csv(run_dir / "retrain" / "results.csv")
    by = {name: rows.sort_values("seed")["top1"].to_numpy() for name, rows in results.groupby("name")}
    sd = np.std(by["best"] - by["handset"], ddof=1)
    assert summary.loc["best", "detectable Δ"] == pytest.approx(detectable_difference(sd, 2))
    assert np.isnan(summary.loc["handset", "detectable Δ"])
    verdict = (run_dir / "report" / "report.md").read_text().split("Verdict:", 1)[1].split("\n", 1)[0]
    if "not significantly different" in verdict:
        assert f"With 2 seeds this run could only detect differences above {summary.loc['best', 'detectable Δ']:.2f}" \
            in verdict


def test_verdict_opens_with_the_search_caveat(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path)
    sentence = "the hand-set ramp scored highest in the search (proxy top-1 60% vs 55%, trial 3)"
    _edit_plan(run, lambda plan: plan["search"].update(handset_scored_higher=True, sentence=sentence))
    verdict = build_report(run, frequency_images=FEW_IMAGES)["verdict"]
    assert verdict.startswith("Verdict: The hand-set ramp scored highest in the search (proxy top-1 60% vs 55%")
    assert "the searched ramp" not in verdict
    _edit_plan(run, lambda plan: plan["search"].update(handset_scored_higher=False, sentence=None))
    assert build_report(run, frequency_images=FEW_IMAGES)["verdict"].startswith("Verdict: the searched ramp is ")


# -- the search section -------------------------------------------------------------------------

def _trials(rows: list[tuple]) -> pd.DataFrame:
    """trials.csv rows of the tiny space: (number, state, value, flops, handset)."""
    arch = json.dumps({"depths": [1, 1, 2, 1], "embed_dims": [32, 64, 64, 96]})
    return pd.DataFrame([{"number": n, "state": state, "value": value, "flops": flops, "params": 400_000,
                          "ramp": json.dumps([1.0, 0.5, 0.5, 0.5, 1 / 3]), "architecture": arch, "handset": hand}
                         for n, state, value, flops, hand in rows])


WITHIN, OVER = 2_950_000, 3_100_000  # FLOPs under and over the tiny space's 0.00297 GFLOPs budget


def test_best_so_far_skips_rejected_candidates():
    space = load_space(TINY)
    trials = _trials([(0, "COMPLETE", 50.0, WITHIN, True), (1, "COMPLETE", 55.0, WITHIN, False),
                      (2, "OVER_BUDGET", 99.0, OVER, False), (3, "PRUNED", 90.0, WITHIN, False),
                      (4, "FAIL", 95.0, WITHIN, False), (5, "COMPLETE", 97.0, OVER, False),
                      (6, "COMPLETE", 60.0, WITHIN, False)])
    expected = [50, 55, 55, 55, 55, 55, 60]
    assert best_so_far(trials, space).tolist() == expected
    fig = history_figure(trials, space)
    steps = [line for line in fig.axes[0].lines if line.get_label().startswith("best so far")]
    assert len(steps) == 1 and steps[0].get_drawstyle() == "steps-post"
    assert list(steps[0].get_ydata()) == expected


def test_top_trials_are_the_best_counted_ones(run_dir):
    space = load_space(TINY)
    rows = [(n, "COMPLETE", 40.0 + n, WITHIN, n == 0) for n in range(TOP_TRIALS + 2)]
    rows += [(20, "COMPLETE", 99.0, OVER, False), (21, "PRUNED", 98.0, WITHIN, False)]
    table = top_trials(_trials(rows), space)
    assert table["trial"].tolist() == list(range(TOP_TRIALS + 1, 1, -1))
    assert list(table.columns) == ["trial", "search top-1", "± s.e.", "GFLOPs", "per-stage C_h/C", "hand-set"]
    assert table["per-stage C_h/C"].iloc[0] == "1×1 | 0.5×1 | 0.5×2 | 0.333×1"
    written = pd.read_csv(run_dir / "report" / "top_trials.csv")
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(written) == (trials["state"] == "COMPLETE").sum() and written["search top-1"].is_monotonic_decreasing
    assert written["± s.e."].gt(0).all()  # every trained trial's score has its standard error over images
    assert written["hand-set"].sum() == 1


def test_importances_need_enough_trials(run_dir):
    complete = (pd.read_csv(run_dir / "trials.csv")["state"] == "COMPLETE").sum()
    assert complete < MIN_TRIALS_FOR_IMPORTANCE
    md = (run_dir / "report" / "report.md").read_text()
    assert (f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
            f"this search has {complete}.") in md
    assert not (run_dir / "report" / "param_importances.csv").exists()


# -- the figures --------------------------------------------------------------------------------

def _drawn(artist) -> bool:
    """Whether a legend's artist puts something on the canvas."""
    if not artist.get_visible():
        return False
    if isinstance(artist, Line2D):
        xy = np.column_stack([artist.get_xdata(), artist.get_ydata()]).astype(float)
        points = np.isfinite(xy).all(axis=1).sum()
        return points >= 2 or (points == 1 and artist.get_marker() not in ("None", "", " ", None))
    if isinstance(artist, PolyCollection):
        return len(artist.get_paths()) > 0
    if isinstance(artist, Collection):
        return len(artist.get_offsets()) > 0
    return True


def test_every_legend_entry_is_drawn(figures):
    assert {"ramp", "history", "pareto", "proxy_fidelity", "curves", "frequency"} <= set(figures)
    for name, fig in figures.items():
        labelled = {label: artist for ax in fig.axes for artist, label in zip(*ax.get_legend_handles_labels())}
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        for legend in legends:
            for text in legend.get_texts():
                assert text.get_text() in labelled and _drawn(labelled[text.get_text()]), (name, text.get_text())


def test_seed_bands_have_their_lines_colour(figures):
    bands = 0
    for name, fig in figures.items():
        for ax in fig.axes:
            lines = {to_rgb(line.get_color()) for line in ax.lines}
            for band in (c for c in ax.collections if isinstance(c, PolyCollection)):
                bands += 1
                assert tuple(band.get_facecolor()[0][:3]) in lines, name
    assert bands >= 6  # 3 schedules x 2 panels, two seeds each


def test_no_label_is_cut_or_covered(figures):
    """Everything drawn lies inside its figure, legends sit beside the axes, x tick labels do not collide."""
    for name, fig in figures.items():
        canvas = FigureCanvasAgg(fig)  # the report closed the figure, which took its canvas
        canvas.draw()
        renderer = canvas.get_renderer()
        drawn = fig.get_tightbbox(renderer)  # inches, from the artists actually drawn
        width, height = fig.get_size_inches()
        slack = 1 / fig.dpi  # a pixel of rounding
        assert -slack <= drawn.x0 and drawn.x1 <= width + slack and -slack <= drawn.y0 and \
            drawn.y1 <= height + slack, (name, drawn, (width, height))
        for legend in fig.legends:  # outside the axes: a legend never covers data
            box = legend.get_window_extent(renderer)
            assert not any(box.overlaps(ax.bbox) for ax in fig.axes), (name, "legend covers an axes")
        for ax in fig.axes:  # tick labels side by side, none over another
            boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
            shown = [b for b in boxes if ax.bbox.x0 - 1 <= (b.x0 + b.x1) / 2 <= ax.bbox.x1 + 1]  # ticks in view
            assert not any(a.overlaps(b) for a, b in zip(shown, shown[1:])), (name, "x tick labels overlap")


def test_depth_axes_mark_stage_boundaries(figures):
    expected = (np.cumsum([1, 1, 2, 1]) / 5)[:-1]  # tiny: depths 1, 1, 2, 1 over 5 blocks
    for name in ("ramp", "frequency"):
        vertical = {round(float(line.get_xdata()[0]), 6) for line in figures[name].axes[0].lines
                    if len(set(np.asarray(line.get_xdata(), dtype=float))) == 1}
        assert set(np.round(expected, 6)) <= vertical, (name, vertical)


def test_baselines_are_retrained_and_reported(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("retrain", "report"))
    for command in (["retrain", str(run), "--baselines", "--seeds", "1", "--top", "1"], ["report", str(run)]):
        result = subprocess.run([sys.executable, str(ROOT / "cli.py"), *command], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    summary = (run / "report" / "summary.csv").read_text()
    for family in ("deit", "crossvit", "t2t"):
        assert f"\n{family},vit" in summary

