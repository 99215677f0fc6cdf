"""The training engine: learning, determinism, kill-and-resume, stopping, recipes, CLI and 2-process DDP."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from devices import TEST_DEVICE  # tests/devices.py
from rampsearch.cli import main as cli_main
from rampsearch.config import ConfigError, TrainConfig, load_recipe, parse_set
from rampsearch.train import StopTraining, fit

REPO = Path(__file__).resolve().parents[1]
TINY_ARCH = {"depths": [1, 1, 1, 1], "embed_dims": [32, 32, 64, 64]}
TINY_DATA = {"synthetic_low_classes": 2, "synthetic_high_classes": 2, "synthetic_train_per_class": 24,
             "synthetic_val_per_class": 8, "batch_size": 16, "warmup_epochs": 0.5}


def tiny(out: Path | None = None, epochs: int = 2, **overrides) -> TrainConfig:
    return TrainConfig(architecture=TINY_ARCH, img_size=32, device=TEST_DEVICE, quiet=True, epochs=epochs,
                       overrides={**TINY_DATA, **overrides}, out=str(out) if out else None)


def metrics(result) -> list[dict[str, float]]:
    """Per-epoch numbers that must reproduce exactly (timings excluded)."""
    return [{k: v for k, v in row.items() if "seconds" not in k and k != "img_s"} for row in result.history]


def test_two_epochs_lower_the_loss_and_write_outputs(tmp_path):
    result = fit(tiny(tmp_path))
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert set(result.final) >= {"top1", "top5", "loss"} and result.params > 0 and result.img_s > 0
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3
    assert json.loads((tmp_path / "result.json").read_text())["epochs"] == 2
    assert load_file(str(tmp_path / "model.safetensors"))
    assert not list(tmp_path.glob("*.pt*")) and not list(tmp_path.glob("*.pkl"))  # nothing pickled


def test_a_log_file_gets_step_lines_every_50_steps_or_30_seconds(monkeypatch, caplog):
    """Output that is not a terminal has no bar: step lines say the epoch is alive (every step here, with the
    time rule at 0 s), then the epoch line."""
    import rampsearch.train as train

    monkeypatch.setattr(train, "PLAIN_LOG_EVERY_SECONDS", 0)
    with caplog.at_level("INFO", logger="rampsearch.train"):
        fit(replace(tiny(epochs=1), quiet=False))
    lines = [r.getMessage() for r in caplog.records]
    steps = [line for line in lines if line.startswith("epoch 1 step ")]
    assert [line.split()[3] for line in steps] == [f"{n}/6" for n in range(1, 7)]  # 96 images, batches of 16
    assert any(line.startswith("epoch 1/1  train_loss") for line in lines)


def test_same_seed_same_metrics_and_other_seed_differs():
    first, second, other = fit(tiny(epochs=1)), fit(tiny(epochs=1)), fit(replace(tiny(epochs=1), seed=5))
    assert metrics(first) == metrics(second)
    assert metrics(first) != metrics(other)


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    # mixup, drop path, EMA and an epoch-stepped schedule: every piece of state that must survive
    extra = {"mixup": 0.8, "cutmix": 1.0, "drop_path": 0.1, "ema_decay": 0.9, "sched_on_epochs": True,
             "warmup_epochs": 1}
    whole = fit(tiny(tmp_path / "whole", epochs=3, **extra))

    def crash(epoch, _metrics):
        if epoch == 1:
            raise KeyboardInterrupt  # stands in for a kill after the epoch-1 checkpoint
    with pytest.raises(KeyboardInterrupt):
        fit(tiny(tmp_path / "cut", epochs=3, **extra), on_epoch=crash)
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["epoch"] == 1
    resumed = fit(tiny(tmp_path / "cut", epochs=3, **extra))
    assert metrics(resumed) == metrics(whole)
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = load_file(str(tmp_path / "whole" / name)), load_file(str(tmp_path / "cut" / name))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_kill_9_then_rerun_resumes_to_the_same_metrics(tmp_path):
    command = [sys.executable, "cli.py", "train", "--arch", str(tmp_path / "arch.json"), "--img-size", "32",
               "--epochs", "3", "--device", "cpu", "--quiet", "--json", "--recipe", "proxy"] + \
        [arg for key, value in TINY_DATA.items() for arg in ("--set", f"{key}={value}")]
    (tmp_path / "arch.json").write_text(json.dumps({"architecture": TINY_ARCH}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(command + ["--out", str(tmp_path / "whole")], cwd=REPO, env=env, capture_output=True,
                           text=True, check=True)
    victim = subprocess.Popen(command + ["--out", str(tmp_path / "cut")], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = tmp_path / "cut" / "checkpoint.json"
    deadline = time.time() + 120
    while not pointer.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert json.loads(pointer.read_text())["epoch"] < 3, "the run finished before it could be killed"
    rerun = subprocess.run(command + ["--out", str(tmp_path / "cut")], cwd=REPO, env=env, capture_output=True,
                           text=True, check=True)
    keep = ("top1", "top5", "loss", "train_loss", "epochs")
    assert {k: json.loads(rerun.stdout)[k] for k in keep} == {k: json.loads(whole.stdout)[k] for k in keep}


def test_on_epoch_can_stop_the_run():
    seen = []

    def prune(epoch, row):
        seen.append((epoch, sorted(row)))
        raise StopTraining("pruned by the test")
    result = fit(tiny(epochs=3), on_epoch=prune)
    assert result.epochs == 1 and result.stopped == "pruned by the test"
    assert seen[0][0] == 1 and {"top1", "top5", "loss", "train_loss", "lr"} <= set(seen[0][1])


def test_a_different_run_in_the_same_out_dir_is_refused(tmp_path):
    fit(tiny(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="recipe.lr"):
        fit(tiny(tmp_path, epochs=1, lr=1e-4))
    fit(replace(tiny(tmp_path, epochs=1, lr=1e-4), resume=False))  # starting over there is fine


def test_fit_accepts_the_search_trial_dict(tmp_path):
    result = fit({"architecture": TINY_ARCH, "ramp": [1.0, 1.0, 0.5, 0.5], "img_size": 32,
                  "data": "synthetic-freq", "recipe": "proxy", "overrides": TINY_DATA, "epochs": 1, "seed": 3,
                  "out": str(tmp_path), "device": TEST_DEVICE, "quiet": True})
    assert result.epochs == 1
    with pytest.raises(ConfigError, match="unknown training config keys"):
        fit({"architecture": TINY_ARCH, "learning_rate": 1})


def test_trains_on_an_image_folder_with_the_paper_augmentations(tmp_path):
    import numpy as np
    from PIL import Image

    for split, count in (("train", 16), ("val", 4)):
        for c in range(2):
            (tmp_path / split / f"class{c}").mkdir(parents=True)
            for i in range(count):
                pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(tmp_path / split / f"class{c}" / f"{i}.png")
    paper_augmentations = {"auto_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.25, "mixup": 0.8, "cutmix": 1.0,
                           "scale": [0.08, 1.0], "workers": 0}
    config = replace(tiny(tmp_path / "run", epochs=1, **paper_augmentations), data=str(tmp_path))
    result = fit(config)
    assert result.epochs == 1 and result.history[0]["top1"] >= 0


# -- recipes -------------------------------------------------------------------------------------------------

def test_recipe_precedence(tmp_path):
    paper = load_recipe("paper")
    assert (paper.lr, paper.epochs, paper.drop_path, paper.batch_size) == (1e-3, 310, 0.2, 1024)
    assert load_recipe("paper", variant="base").drop_path == 0.4  # the paper's per-variant setting
    assert load_recipe("paper", {"drop_path": 0.3}, variant="base").drop_path == 0.3  # overrides win
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: paper\nlr: 5.0e-4\nvariant_overrides:\n  base: {clip_grad: 3.0}\n")
    r = load_recipe(str(mine), variant="base")
    assert (r.lr, r.clip_grad, r.drop_path, r.weight_decay) == (5e-4, 3.0, 0.4, 0.05)  # file over base file
    assert load_recipe(str(mine), parse_set(["lr=2e-3", "scale=[0.5, 1]"])).lr == 2e-3  # --set over the file
    # the run's own epochs/seed (--epochs/--seed) beat the recipe and --set
    result = fit(replace(tiny(epochs=1), overrides={**TINY_DATA, "epochs": 5, "seed": 9}, seed=4))
    assert result.epochs == 1
    assert metrics(result) == metrics(fit(replace(tiny(epochs=1), seed=4)))


@pytest.mark.parametrize("text, message", [
    ("lr: 1.0e-3\n", "lacks .*base: proxy"),
    ("base: proxy\nlearning_rate: 1\n", "unknown recipe key 'learning_rate'"),
    ("base: proxy\nbatch_size: many\n", "batch_size: expected int"),
    ("base: proxy\namp: fp8\n", "amp must be"),
    ("[1, 2]\n", "expected a mapping"),
])
def test_bad_recipes_name_the_problem(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(str(path))


def test_too_short_for_the_schedule_is_an_error():
    with pytest.raises(ConfigError, match="must exceed warmup_epochs"):
        fit(TrainConfig(variant="nano", recipe="paper", epochs=12, device="cpu"))


# -- command line ------------------------------------------------------------------------------------------

def test_cli_train_json(tmp_path, capsys):
    (tmp_path / "arch.yaml").write_text(f"architecture: {json.dumps(TINY_ARCH)}\n")
    args = ["train", "--arch", str(tmp_path / "arch.yaml"), "--ramp", "1,1,0.5,0.5", "--img-size", "32",
            "--epochs", "1", "--out", str(tmp_path / "run"), "--device", "cpu", "--json", "--quiet"]
    args += [a for k, v in TINY_DATA.items() for a in ("--set", f"{k}={v}")]
    with pytest.raises(SystemExit) as done:
        cli_main(args)
    assert done.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 1 and 0 <= out["top1"] <= 100 and {"top5", "loss", "seconds"} <= set(out)


@pytest.mark.parametrize("extra, message", [
    (["--data", "/no/such/folder"], "/no/such/folder does not exist"),
    (["--recipe", "nonesuch"], "recipe 'nonesuch'"),
    (["--set", "lr"], "expected KEY=VALUE"),
    (["--ramp", "0.5,0.5"], "ramp has 2 values"),
])
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as done:
        cli_main(["train", "--variant", "nano", "--epochs", "1", "--out", str(tmp_path), "--device", "cpu"] + extra)
    err = capsys.readouterr().err
    assert done.value.code == 2 and message in err and "Traceback" not in err


# -- data-parallel ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: str, fail_after: int | None, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)

    def crash(epoch, _row):
        if epoch == fail_after:
            raise RuntimeError("simulated crash")
    try:
        result = fit(tiny(Path(out), epochs=2), on_epoch=crash)
        results[rank] = metrics(result)
    except RuntimeError as exc:
        results[rank] = str(exc)


def _ddp(out: Path, fail_after: int | None = None) -> dict:
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(_free_port(), str(out), fail_after, results), nprocs=2, join=True)
    return dict(results)


def test_two_process_gloo_ddp_trains_resumes_and_only_rank0_writes(tmp_path):
    whole = _ddp(tmp_path / "whole")
    assert whole[0] == whole[1] and len(whole[0]) == 2  # metrics are reduced over both processes
    assert (tmp_path / "whole" / "metrics.csv").read_text().count("\n") == 3
    crashed = _ddp(tmp_path / "cut", fail_after=1)
    assert crashed[0] == "simulated crash" and "rank 0" in crashed[1]  # rank 1 is told, does not hang
    resumed = _ddp(tmp_path / "cut")
    assert resumed[0] == whole[0]


def test_weights_get_the_same_permissions_as_every_other_file(tmp_path):
    import stat

    from rampsearch.checkpoint import save_checkpoint, save_weights, write_json

    save_weights(tmp_path / "model.safetensors", {"w": torch.zeros(2)})
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)}, {"m": torch.ones(1)})
    write_json(tmp_path / "result.json", {})
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_a_finished_run_drops_its_resume_state_unless_asked_to_keep_it(tmp_path):
    first = fit(tiny(tmp_path / "lean", epochs=1))
    names = {p.name for p in (tmp_path / "lean").iterdir()}
    assert {"model.safetensors", "metrics.csv", "result.json", "config.json"} <= names
    assert "checkpoint.json" not in names and not any(n.startswith("ckpt-") for n in names)
    fit(replace(tiny(tmp_path / "kept", epochs=1), keep_checkpoints=True))
    assert (tmp_path / "kept" / "checkpoint.json").exists() and list((tmp_path / "kept").glob("ckpt-1.*"))
    # rerunning a finished run returns its stored result instead of training it again from scratch
    called = []
    again = fit(tiny(tmp_path / "lean", epochs=1), on_epoch=lambda epoch, row: called.append(epoch))
    assert again.final == first.final and again.history == first.history and called == []


def test_iformer_training_decays_the_position_embeddings_as_the_official_runs_did():
    """The model names pos_embed1-4 in no_weight_decay (for timm users), and training still decays them."""
    from rampsearch.models import build_iformer, build_t2t_vit
    from rampsearch.train import _decay_groups

    model = build_iformer("nano")
    assert model.no_weight_decay() == {"pos_embed1", "pos_embed2", "pos_embed3", "pos_embed4"}
    decayed = {id(p) for group in _decay_groups(model, 0.05) if group["weight_decay"] > 0 for p in group["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert {"pos_embed1", "pos_embed4"} <= names
    assert names == {name for name, p in model.named_parameters() if p.ndim > 1}  # 1-D ones are never decayed
    vit = build_t2t_vit("t_7", img_size=32)
    assert _decay_groups(vit, 0.05) is vit  # timm's rule: create_optimizer_v2 reads its no_weight_decay
