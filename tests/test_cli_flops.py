"""`rampsearch flops`: JSON schema, ramp files, and one-line errors for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rampsearch.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_flops_json(capsys):
    code, out, _ = run_cli(capsys, "flops", "--variant", "nano", "--json")
    data = json.loads(out)
    assert code == 0
    assert {"params", "flops", "ramp", "per_block"} <= set(data)
    assert data["flops"] == data["flops_estimate"] == 92_341_760
    assert 0.8 * data["flops"] < sum(b["flops"] for b in data["per_block"]) < data["flops"]  # + stem, head
    assert len(data["ramp"]) == len(data["per_block"]) == 10
    assert data["per_block"][0] == {"block": 0, "stage": 1, "width": 64, "ratio": 0.5, "high_channels": 32,
                                    "low_channels": 32, "flops": data["per_block"][0]["flops"]}


def test_flops_with_ramp_file_and_arch_file(capsys, tmp_path):
    from rampsearch import Architecture, RampSchedule

    arch = Architecture((1, 1, 2, 1), (64, 64, 96, 128))
    ramp = RampSchedule((1.0, 0.5, 2 / 3, 0.0, 0.25))
    ramp.save(tmp_path / "best.yaml", arch)
    code, out, _ = run_cli(capsys, "flops", "--arch", str(tmp_path / "best.yaml"), "--ramp",
                           str(tmp_path / "best.yaml"), "--img-size", "64", "--json")
    assert code == 0 and json.loads(out)["ramp"] == list(ramp.ratios)


@pytest.mark.parametrize("argv,message", [
    (["--variant", "small", "--ramp", "0.5,0.5"], "has 2 values but the architecture has 18 blocks"),
    (["--variant", "nano", "--ramp", "no-such.yaml"], "ramp file no-such.yaml does not exist"),
    (["--variant", "nano", "--img-size", "8"], "expected an integer >= 32"),
    (["--arch", "missing.yaml"], "missing.yaml does not exist"),
])
def test_user_errors_are_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, "flops", *argv)
    assert code == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_py_is_the_console_script():
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "flops", "--variant", "small"],
                         capture_output=True, text=True, check=True).stdout
    assert "19,866,344 params, 4,848,476,928 FLOPs" in out
