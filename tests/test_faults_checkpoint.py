"""Damaged checkpoint and weights files: a rerun resumes from an intact checkpoint, or restarts, never loads one.

Each case stops a tiny run after epoch STOP_AFTER of EPOCHS, damages files, reruns it and compares it
with an uninterrupted run of the same seed: training is a pure function of its config on CPU, so the
metrics and final weights must be equal exactly.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rampsearch.checkpoint import POINTER, load_checkpoint, load_weights, save_checkpoint
from rampsearch.errors import UserError
from rampsearch.model_spec import build_model
from rampsearch.train import fit, model_spec
from test_train import metrics, tiny

pytestmark = pytest.mark.faults

EPOCHS, STOP_AFTER = 4, 2
FIRST_CHECKPOINT = ["ckpt-1.model.safetensors", "ckpt-1.state.safetensors"]  # alone after a clean restart
DAMAGED_BYTES, DAMAGE_SEED = 64, 0  # that many random bytes overwrite the middle of a file
WARNING_LOGGER = "rampsearch.checkpoint"
TINY_CLASSES = 4  # tiny()'s synthetic data: 2 low-frequency x 2 high-frequency classes
RESTARTS = "no intact earlier checkpoint, so the training restarts from epoch 1"


class Killed(Exception):
    """Stands in for a kill after a checkpoint was written (fit leaves it behind)."""


Run = tuple[list[dict[str, float]], dict[str, torch.Tensor]]  # (metrics, final weights)


@functools.cache
def uninterrupted(threads: int) -> Run:
    """The uninterrupted run with `threads` torch threads (results are equal only at equal thread counts)."""
    with tempfile.TemporaryDirectory() as out:
        result = fit(tiny(Path(out), epochs=EPOCHS))
        return metrics(result), load_file(str(Path(out) / "model.safetensors"))


@pytest.fixture
def whole() -> Run:
    """The uninterrupted run, trained once under the thread count conftest sets for every test."""
    return uninterrupted(torch.get_num_threads())


def stopped_run(out: Path, after: int = STOP_AFTER) -> Path:
    """`out` after the run was killed once epoch `after`'s checkpoint was written."""
    def kill(epoch: int, _row: dict[str, float]) -> None:
        if epoch == after:
            raise Killed
    with pytest.raises(Killed):
        fit(tiny(out, epochs=EPOCHS), on_epoch=kill)
    assert json.loads((out / POINTER).read_text())["epoch"] == after
    return out


def rerun(out: Path, whole: Run) -> dict[int, list[str]]:
    """Finish the run in `out`, check it equals the uninterrupted one; {epoch trained: checkpoint files then}."""
    trained: dict[int, list[str]] = {}

    def record(epoch: int, _row: dict[str, float]) -> None:
        trained[epoch] = sorted(p.name for p in out.glob("ckpt-*"))
    result = fit(tiny(out, epochs=EPOCHS), on_epoch=record)
    expected_metrics, expected_weights = whole
    assert metrics(result) == expected_metrics
    weights = load_file(str(out / "model.safetensors"))
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[k], expected_weights[k]) for k in weights)
    return trained


def overwrite_middle(path: Path) -> None:
    """Random bytes over DAMAGED_BYTES in the middle of `path`; its length stays the same."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + DAMAGED_BYTES] = random.Random(DAMAGE_SEED).randbytes(DAMAGED_BYTES)
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def warnings_of(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records
                     if r.name == WARNING_LOGGER and r.levelno == logging.WARNING)


def test_damaged_current_weights_resume_from_the_previous_checkpoint(tmp_path, caplog, whole):
    out = stopped_run(tmp_path)
    overwrite_middle(out / "ckpt-2.model.safetensors")
    trained = rerun(out, whole)
    assert list(trained) == [2, 3, 4]
    assert trained[2] == FIRST_CHECKPOINT + ["ckpt-2.model.safetensors", "ckpt-2.state.safetensors"]  # rewritten
    assert (f"{out / 'ckpt-2.model.safetensors'} is damaged (sha256 mismatch); resuming from the previous "
            "checkpoint, epoch 1") in warnings_of(caplog)


def test_truncated_current_state_resumes_from_the_previous_checkpoint(tmp_path, caplog, whole):
    out = stopped_run(tmp_path)
    truncate(out / "ckpt-2.state.safetensors")
    assert list(rerun(out, whole)) == [2, 3, 4]
    message = warnings_of(caplog)
    assert f"{out / 'ckpt-2.state.safetensors'} is damaged (truncated: " in message
    assert message.endswith("resuming from the previous checkpoint, epoch 1")


def test_current_and_previous_damaged_restart_from_scratch(tmp_path, caplog, whole):
    out = stopped_run(tmp_path)
    overwrite_middle(out / "ckpt-2.model.safetensors")
    truncate(out / "ckpt-1.state.safetensors")
    trained = rerun(out, whole)
    assert list(trained) == [1, 2, 3, 4] and trained[1] == FIRST_CHECKPOINT
    message = warnings_of(caplog)
    assert f"{out / 'ckpt-2.model.safetensors'} is damaged (sha256 mismatch)" in message
    assert f"{out / 'ckpt-1.state.safetensors'} is damaged (truncated: " in message
    assert message.endswith(RESTARTS)


def test_a_single_damaged_checkpoint_restarts_from_scratch(tmp_path, caplog, whole):
    out = stopped_run(tmp_path, after=1)
    overwrite_middle(out / "ckpt-1.state.safetensors")
    trained = rerun(out, whole)
    assert list(trained) == [1, 2, 3, 4] and trained[1] == FIRST_CHECKPOINT
    assert warnings_of(caplog) == (f"{out / 'ckpt-1.state.safetensors'} is damaged (sha256 mismatch); "
                                   f"{RESTARTS}")


def test_a_garbled_checkpoint_json_restarts_from_scratch(tmp_path, caplog, whole):
    out = stopped_run(tmp_path)
    pointer = out / POINTER
    pointer.write_text(pointer.read_text()[:100])
    trained = rerun(out, whole)
    assert list(trained) == [1, 2, 3, 4] and trained[1] == FIRST_CHECKPOINT
    message = warnings_of(caplog)
    assert message.startswith(f"{pointer} is damaged (cannot be read: ") and message.endswith(RESTARTS)


def test_an_old_style_checkpoint_without_checksums_still_resumes(tmp_path, caplog, whole):
    out = stopped_run(tmp_path)
    pointer = json.loads((out / POINTER).read_text())
    old_style = {k: pointer[k] for k in ("epoch", "model", "tensors", "state")}
    (out / POINTER).write_text(json.dumps(old_style))
    assert list(rerun(out, whole)) == [3, 4]
    assert warnings_of(caplog) == ""


def test_a_damaged_final_model_is_a_user_error_naming_it(tmp_path):
    fit(tiny(tmp_path, epochs=1))
    result = json.loads((tmp_path / "result.json").read_text())
    model = tmp_path / "model.safetensors"
    assert result["sha256"] == {"model.safetensors": hashlib.sha256(model.read_bytes()).hexdigest()}
    net = build_model(model_spec(tiny()), TINY_CLASSES)
    load_weights(model, net)  # intact: loads
    overwrite_middle(model)
    with pytest.raises(UserError, match=f"{model} is damaged \\(sha256 mismatch\\)"):
        load_weights(model, net)


def test_checkpoint_json_records_checksums_and_keeps_only_the_previous_epoch(tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, epoch, {"w": torch.full((3,), float(epoch))}, {"m": torch.ones(2) * epoch})
    pointer = json.loads((tmp_path / POINTER).read_text())
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-2.model.safetensors", "ckpt-2.state.safetensors", "ckpt-3.model.safetensors", "ckpt-3.state.safetensors"]
    assert (pointer["epoch"], pointer["previous"]["epoch"]) == (3, 2)
    for record in (pointer, pointer["previous"]):
        for name in (record["model"], record["tensors"]):
            data = (tmp_path / name).read_bytes()
            assert record["sha256"][name] == hashlib.sha256(data).hexdigest()
            assert record["bytes"][name] == len(data)
    assert "previous" not in pointer["previous"]


def test_a_kill_before_the_pointer_is_written_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(3)}, {"m": torch.zeros(2)})

    def killed(*_args) -> None:
        raise Killed
    monkeypatch.setattr("rampsearch.checkpoint.write_json", killed)
    with pytest.raises(Killed):
        save_checkpoint(tmp_path, 2, {"w": torch.ones(3)}, {"m": torch.ones(2)})
    epoch, weights, state = load_checkpoint(tmp_path)
    assert epoch == 1 and torch.equal(weights["w"], torch.zeros(3)) and torch.equal(state["m"], torch.zeros(2))
