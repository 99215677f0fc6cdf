"""Every user error a new user hit: one line naming what is wrong, exit status 2, nothing half-written.

Run in-process through `rampsearch.cli.main` (the same code path as the command), so each case
costs milliseconds instead of an interpreter start.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from rampsearch.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `rampsearch ARGV`."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_user_error(result: tuple[int, str, str], *fragments: str) -> None:
    code, _, err = result
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 12  # argparse prints usage lines first
    for fragment in fragments:
        assert fragment in err, err


def space_with(tmp_path: Path, old: str, new: str) -> Path:
    text = TINY.read_text()
    assert old in text
    path = tmp_path / "space.yaml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("argv,fragments", [
    (["search", TINY, "--trials", "0"], ["--trials: expected an integer >= 1, got 0"]),
    (["search", TINY, "--workers", "-1"], ["--workers: expected an integer >= 1, got -1"]),
    (["train", "--variant", "nano", "--img-size", "0", "--out", "x"], ["--img-size: expected an integer >= 1"]),
    (["train", "--variant", "nano", "--seed", "-1", "--out", "x"], ["--seed: expected an integer >= 0, got -1"]),
    (["train", "--variant", "nano", "--device", "gpu", "--out", "x"], ["expected auto, cpu, cuda or cuda:N"]),
    (["flops", "--variant", "nano", "--num-classes", "0"], ["--num-classes: expected an integer >= 1, got 0"]),
    (["flops", "--variant", "nano", "--img-size", "16"], ["image size 16: expected an integer >= 32"]),
    (["retrain", "runs/none", "--seeds", "0"], ["--seeds: expected an integer >= 1, got 0"]),
])
def test_zero_negative_and_malformed_values_are_refused(capsys, argv, fragments):
    assert_user_error(cli(capsys, *argv), *fragments)


def test_boolean_in_a_space_is_refused_not_defaulted(capsys, tmp_path):
    space = space_with(tmp_path, "  trials: 4\n", "  trials: true\n")
    assert_user_error(cli(capsys, "search", space, "--out", tmp_path / "run"),
                      "search.trials: expected an integer >= 1, got True")
    assert not (tmp_path / "run").exists()


def test_cuda_without_a_gpu_stops_before_the_first_trial(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_user_error(cli(capsys, "search", TINY, "--device", "cuda", "--out", tmp_path / "run"),
                      "--device cuda: no CUDA GPU is available")
    assert not (tmp_path / "run").exists()  # checked once, before anything is written or trained


def test_bad_recipe_override_stops_before_the_first_trial(capsys, tmp_path):
    assert_user_error(cli(capsys, "search", TINY, "--set", "lr_typo=1", "--out", tmp_path / "run"),
                      "unknown recipe key 'lr_typo'")
    assert_user_error(cli(capsys, "retrain", tmp_path / "run", "--set", "=1"), "--set '=1': expected KEY=VALUE")


def test_missing_data_path_stops_before_the_first_trial(capsys, tmp_path):
    space = space_with(tmp_path, "  data: synthetic-freq\n", f"  data: {tmp_path / 'no-such-folder'}\n")
    assert_user_error(cli(capsys, "search", space, "--out", tmp_path / "run"), "no-such-folder")
    assert not (tmp_path / "run").exists()


def test_one_class_data_set_is_refused(capsys, tmp_path):
    folder = tmp_path / "data" / "only"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i, i, i)).save(folder / f"{i}.png")
    assert_user_error(cli(capsys, "train", "--variant", "nano", "--data", tmp_path / "data", "--out", tmp_path / "o"),
                      "class")
    assert not (tmp_path / "o").exists()


def test_image_size_too_large_for_memory_is_refused_before_allocating(capsys, tmp_path):
    started = time.perf_counter()
    code, _, err = cli(capsys, "train", "--variant", "nano", "--img-size", "100000", "--out", tmp_path / "o")
    assert code == 2 and "100000" in err and "GiB" in err, err
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("content,fragment", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary", "is not a text file"),
    (b"ramp: [0.5, oops", "is not valid YAML"),
    (b"- just\n- a list\n", "expected a mapping"),
])
def test_unreadable_ramp_files(capsys, tmp_path, content, fragment):
    ramp = tmp_path / "ramp.yaml"
    ramp.write_bytes(content)
    assert_user_error(cli(capsys, "flops", "--variant", "nano", "--ramp", ramp, "--no-trace"), fragment)


def test_ramp_file_that_is_a_directory(capsys, tmp_path):
    assert_user_error(cli(capsys, "flops", "--arch", tmp_path), "is not a file")


def test_out_that_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("mine")
    assert_user_error(cli(capsys, "search", TINY, "--out", blocker / "run"), "is a file, not a directory")
    assert_user_error(cli(capsys, "train", "--variant", "nano", "--out", blocker, "--epochs", "1"),
                      "is a file, not a directory")
    assert blocker.read_text() == "mine"  # nothing lost


def test_unsupported_storage_scheme_names_the_driver(capsys, tmp_path):
    result = cli(capsys, "search", TINY, "--storage", "mongodb://u:s3cret@h/db", "--out", tmp_path / "run")
    assert_user_error(result, "unsupported storage", "postgresql://")
    assert "s3cret" not in result[2]
    result = cli(capsys, "search", TINY, "--storage", "mysql://u:s3cret@h/db", "--out", tmp_path / "run")
    assert_user_error(result, "pip install 'PyMySQL'")
    assert "s3cret" not in result[2]


def test_report_creates_nothing_until_its_input_is_valid(capsys, tmp_path):
    out = tmp_path / "report"
    assert_user_error(cli(capsys, "report", tmp_path / "no-run", "--out", out), "not a search run directory")
    assert not out.exists() and not (tmp_path / "no-run").exists()


def test_retrain_of_a_directory_without_a_search(capsys, tmp_path):
    assert_user_error(cli(capsys, "retrain", tmp_path), "not a search run directory")
    assert not (tmp_path / "retrain").exists()


def test_version_and_closed_form_flops(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("rampsearch ")
    started = time.perf_counter()
    code, out, _ = cli(capsys, "flops", "--variant", "small", "--no-trace", "--json")
    assert code == 0 and json.loads(out)["flops"] == 4_848_476_928 and json.loads(out)["method"] == "closed form"
    assert time.perf_counter() - started < 1.0


def test_search_whose_trials_all_fail_exits_nonzero_with_the_first_reason(capsys, tmp_path):
    space = space_with(tmp_path, "    workers: 0\n", "    workers: 0\n    lr: 1.0e+12\n    clip_grad: null\n")
    code, _, err = cli(capsys, "search", space, "--trials", "2", "--out", tmp_path / "run", "--quiet")
    assert code == 1, err
    assert "no trial completed" in err and "diverged" in err and "Traceback" not in err
    assert (tmp_path / "run" / "trials.csv").exists()  # every trial's reason is kept


def test_retrain_seeds_zero_leaves_nothing_half_written(capsys, tmp_path):
    assert_user_error(cli(capsys, "retrain", tmp_path, "--seeds", "0"), "--seeds")
    assert not (tmp_path / "retrain" / "results.csv").exists()


@pytest.mark.parametrize("command", ["report", "export"])
def test_a_run_retrained_only_on_a_target_names_the_target_to_pass(capsys, tmp_path, command):
    import optuna

    from rampsearch.search.study import open_storage

    run = tmp_path / "run"
    run.mkdir()
    (run / "space.yaml").write_text(TINY.read_text())
    optuna.create_study(study_name="tiny", storage=open_storage(run, None))  # a searched run, as far as reading goes
    (run / "retrain-small-64").mkdir()  # `rampsearch retrain RUN --target small --img-size 64`
    (run / "retrain-nano-64").mkdir()  # `--target nano`: at nano's own size
    out = tmp_path / "out"
    argv = [command, run, "--out", out]
    assert_user_error(cli(capsys, *argv), f"{run} has no retraining of the searched model in retrain/, but has "
                                          "retrain-nano-64/, retrain-small-64/: pass --target nano, or --target small "
                                          f"--img-size 64 (or run `rampsearch retrain {run}` first)")
    assert not out.exists() and not (run / "retrain").exists()
