"""The committed demo report (reports/demo) was made by the report code and the demo space in this tree:
a change to either without regenerating the report fails here, so a stale report cannot be committed."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from rampsearch.report import file_digest, report_code_digest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "reports" / "demo"
REGENERATE = "regenerate it: `make demo`, then copy runs/demo/report/ over reports/demo/ (reports/README.md)"


def _metadata() -> pd.Series:
    return pd.read_csv(DEMO / "metadata.csv").set_index("item")["value"]


def test_the_demo_report_was_written_by_this_report_code():
    made_by = _metadata().get("report code")
    assert made_by == report_code_digest(), f"reports/demo was written by other report code ({made_by}); {REGENERATE}"


def test_the_demo_report_is_of_this_demo_space():
    space = _metadata().get("space sha256")
    assert space == file_digest(ROOT / "search_spaces" / "demo_one_shot.yaml"), \
        f"reports/demo was made from another search_spaces/demo_one_shot.yaml ({space}); {REGENERATE}"
