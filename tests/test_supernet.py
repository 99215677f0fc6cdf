"""The weight-sharing supernet (rampsearch.supernet) and the one-shot method (rampsearch.search.methods.one_shot).

Extraction is exact (logits, state_dict, FLOPs) for every parameterization and an architecture space;
weights are shared by slicing with heads numbered from the end; the sandwich rule trains (the loss falls,
deterministically, and a kill -9 resumes to the same weights); wrong sub-networks, supernet folders and
spaces are refused naming what differs; scoring recalibrates BatchNorm and is deterministic.

Everything runs on iFormer-nano at 32 px, on one torch thread (a run is a pure function of its config
on CPU at a fixed thread count, which the kill -9 test relies on).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from devices import TEST_DEVICE  # tests/devices.py
from rampsearch import Architecture, RampSchedule
from rampsearch.checkpoint import POINTER, RESULT
from rampsearch.cli import main as cli_main
from rampsearch.config import load_recipe
from rampsearch.data import build_datasets
from rampsearch.flops import count_flops, estimate_flops, flops_model
from rampsearch.models import build_iformer
from rampsearch.models.inception_transformer import InceptionMixer, InceptionTransformer
from rampsearch.ramp import RampError
from rampsearch.search import SearchOptions, run_search
from rampsearch.search.load import parse_space
from rampsearch.search.methods import one_shot
from rampsearch.search.methods.one_shot import (check_supernet, load_supernet, make_scorer, recalibrate_batchnorm,
                                        score_candidate, supernet_config)
from rampsearch.search.record import ONE_SHOT
from rampsearch.search.space import SpaceError
from rampsearch.supernet import (RampSupernet, SharedMixer, Subnet, SupernetError, SupernetSpec,
                                 sandwich_backward)
from rampsearch.train import MODEL_FILE, evaluate, fit

REPO = Path(__file__).resolve().parents[1]
NANO = Architecture.resolve("nano")  # depths 2-2-4-2, widths 64-128-192-256: 2, 4, 6, 8 heads per block
IMG, CLASSES = 32, 5
ARCH_CHOICES = {"depths": ((1, 2), (1, 2), (2, 4), (1, 2)), "mlp_ratios": (2.0, 4.0),
                "pool_sizes": ((1, 2), (1, 2), (1, 2), (1,))}
# The supernet that trains in these tests: 4 synthetic classes x 10 images, 8 of them held out as the
# search split, so 2 steps of 16 per epoch; 3 sub-networks per step (the extremes and one sampled).
TINY = {"synthetic_low_classes": 2, "synthetic_high_classes": 2, "synthetic_train_per_class": 10,
        "synthetic_val_per_class": 2, "batch_size": 16, "eval_batch_size": 64, "lr": 1e-3, "warmup_epochs": 0,
        "amp": "off"}  # fp32: the same numbers on CPUs with and without bf16
EPOCHS = 3
SPACE = {"name": "tiny_one_shot", "architecture": {"variant": "nano"}, "img_size": IMG, "method": "one-shot",
         "ramp": {"parameterization": "per_stage"}, "proxy": {"epochs": EPOCHS, "overrides": TINY},
         "supernet": {"random_ramps": 1, "score_images": 8, "bn_images": 16}, "search": {"trials": 2}}
TIMING_KEYS = ("train_seconds", "img_s", "epoch_seconds")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # after conftest's fixture: equal thread counts in and out of process
    yield


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))


def scrambled(supernet: RampSupernet, seed: int = 0) -> RampSupernet:
    """`supernet` with O(1) random weights and BatchNorm statistics, in eval mode.

    At its init the layer scales of stages 3-4 are 1e-6, so those blocks' mixers would hardly touch
    the logits and a wrong slice there would pass unseen.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in supernet.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif "norm" in name or "layer_scale" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        for name, b in supernet.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return supernet.eval()


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def assert_extraction_exact(supernet: RampSupernet, sub: Subnet, x: torch.Tensor, fvcore: bool) -> torch.Tensor:
    """extract(sub) is the plain iFormer of sub (keys, shapes, strict load), with the supernet's logits and
    the closed-form FLOPs (also traced by fvcore if `fvcore`: a third of a second); returns the logits."""
    model = supernet.extract(sub)
    assert type(model) is InceptionTransformer
    fresh = build_iformer(**sub.arch.build_kwargs(), ramp=sub.ramp, img_size=IMG, num_classes=CLASSES)
    assert shapes(model) == shapes(fresh)
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        expected, got = supernet.eval()(x, sub), model.eval()(x)
    assert expected.shape == (len(x), CLASSES)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    flops = flops_model(sub.arch, IMG, CLASSES).of(sub.ramp)
    assert not fvcore or count_flops(model, IMG) == flops
    assert estimate_flops(**sub.arch.build_kwargs(), ramp=sub.ramp, img_size=IMG, num_classes=CLASSES) == flops
    return expected


# -- 1. extraction equals the supernet -------------------------------------------------------------------

@pytest.mark.parametrize("kind,ratio_range,knots", [
    ("free", (0.0, 1.0), 4), ("per_stage", (0.2, 0.8), 4), ("monotone", (0.0, 0.6), 4), ("knots", (0.3, 1.0), 3)])
def test_extraction_equals_the_supernet_for_every_parameterization(kind, ratio_range, knots):
    spec = SupernetSpec(NANO, IMG, ratio_range, kind, knots)
    supernet = scrambled(RampSupernet(spec, CLASSES))
    x = images()
    subs = [spec.sample(random.Random(i)) for i in range(3)] + list(spec.extremes())
    assert len({sub.ramp for sub in subs}) >= 3, "the sampled ramps should differ"
    logits = [assert_extraction_exact(supernet, sub, x, fvcore=i in (0, 3)) for i, sub in enumerate(subs)]
    assert (logits[0] - logits[1]).abs().max() > 1e-2  # other ramps give other logits: the check is not vacuous
    for sub in subs[:3]:
        assert sub.arch == NANO
        heads, ranges = sub.ramp.high_heads(NANO), spec.block_ranges()
        assert all(lo <= k <= hi for k, (lo, hi) in zip(heads, ranges))
        if kind == "per_stage":
            assert all(len(set(rs)) == 1 for rs in sub.ramp.per_stage(NANO))
        if kind == "monotone":
            assert list(sub.ramp.ratios) == sorted(sub.ramp.ratios, reverse=True)


def test_extraction_equals_the_supernet_over_an_architecture_space():
    spec = SupernetSpec(NANO, IMG, (0.0, 1.0), "free", **ARCH_CHOICES)
    supernet = scrambled(RampSupernet(spec, CLASSES), seed=1)
    x = images()
    subs = [spec.sample(random.Random(i)) for i in range(5)] + list(spec.extremes())
    archs = [sub.arch for sub in subs]
    assert len({a.depths for a in archs}) >= 3 and {a.mlp_ratio for a in archs} == {2.0, 4.0}
    assert len({a.pool_sizes for a in archs}) >= 2
    assert all(a == spec.largest for a in archs[-2:]) and spec.largest.depths == (2, 2, 4, 2)
    for i, sub in enumerate(subs):
        assert_extraction_exact(supernet, sub, x, fvcore=i % 2 == 0)


def test_extracted_weights_are_copies():
    spec = SupernetSpec(NANO, IMG)
    supernet = scrambled(RampSupernet(spec, CLASSES))
    sub, x = spec.sample(random.Random(0)), images()
    before = supernet(x, sub).detach()
    model = supernet.extract(sub)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert torch.equal(supernet(x, sub), before)


# -- 2. weight sharing --------------------------------------------------------------------------------

def test_a_sub_network_depends_on_exactly_the_slices_it_uses():
    spec = SupernetSpec(NANO, IMG, **ARCH_CHOICES)
    supernet = scrambled(RampSupernet(spec, CLASSES))
    arch = Architecture((2, 2, 3, 2), NANO.embed_dims, mlp_ratio=2.0)
    heads = [1, 1, 2, 2, 3, 3, 3, 4, 4]  # stage 2, block 0: C_h = 64 of 128, the last two heads attend
    sub = Subnet(arch, RampSchedule.from_high_heads(arch, heads))
    x = images()
    reference = supernet(x, sub).detach()
    mixer, block3 = supernet.body.blocks2[0].attn, supernet.body.blocks3
    mlp, hidden = block3[0].mlp, 192 * 2
    assert (mixer.max_high, mixer.max_low) == (128, 128)
    unused = [  # dropped heads, high-frequency units, hidden units and a dropped block
        mixer.qkv[:64], mixer.qkv[128:192], mixer.qkv[256:320], mixer.qkv[:, :64], mixer.qkv_bias[:64],
        mixer.conv1[64:], mixer.conv1[:, 32:], mixer.proj1[64:], mixer.proj2[64:], mixer.proj2[:, 32:],
        mixer.proj2_bias[64:], mixer.fuse_conv[64:], mixer.fuse_pool[64:], mixer.proj_conv[:, 64:],
        mixer.proj_pool[:, 64:], mixer.fuse_low[:64], mixer.proj_low[:, :64],
        mlp.fc1.weight[hidden:], mlp.fc1.bias[hidden:], mlp.fc2.weight[:, hidden:],
        block3[3].mlp.fc1.weight, block3[3].attn.qkv]
    used = [
        mixer.qkv[64:128, 64:], mixer.qkv[192:256, 64:], mixer.qkv[320:, 64:], mixer.qkv_bias[64:128],
        mixer.conv1[:64, :32], mixer.proj1[:64], mixer.proj2[:64, :32], mixer.proj2_bias[:64],
        mixer.fuse_conv[:64], mixer.fuse_pool[:64], mixer.proj_conv[:, :64], mixer.proj_pool[:, :64],
        mixer.fuse_low[64:], mixer.proj_low[:, 64:], mixer.proj_bias,
        mlp.fc1.weight[:hidden], mlp.fc2.weight[:, :hidden], block3[2].attn.qkv]
    for view in unused:
        with torch.no_grad():
            view.add_(1.0)
        assert torch.equal(supernet(x, sub), reference)
    for view in used:
        with torch.no_grad():
            saved = view.clone()
            view.add_(0.5)
        assert (supernet(x, sub) - reference).abs().max() > 1e-4
        with torch.no_grad():
            view.copy_(saved)
        assert torch.equal(supernet(x, sub), reference)


def test_a_head_keeps_its_weights_across_ramps():
    mixer = SharedMixer(128, max_high=128, max_low=128)  # a stage-2 block: 4 heads of 32
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_()
    two, one = mixer.sliced(64), mixer.sliced(96)  # C_l = 2 heads vs 1 head
    assert two["low_mixer.qkv.weight"].shape == (192, 64) and one["low_mixer.qkv.weight"].shape == (96, 32)
    for s in range(3):  # q, k and v: the single head is the last head of the two (rows and input channels)
        only, last = slice(s * 32, (s + 1) * 32), slice(s * 64 + 32, (s + 1) * 64)
        assert torch.equal(one["low_mixer.qkv.weight"][only], two["low_mixer.qkv.weight"][last, 32:])
        assert torch.equal(one["low_mixer.qkv.bias"][only], two["low_mixer.qkv.bias"][last])
    # the fusion and the projection of those attention channels are the same weights too (last segment)
    assert torch.equal(one["conv_fuse.weight"][-32:], two["conv_fuse.weight"][-32:])
    assert torch.equal(one["proj.weight"][:, -32:], two["proj.weight"][:, -32:])
    # high-frequency channels are the first ones: the 1x1 expansion of the conv branch nests
    assert torch.equal(two["high_mixer.conv1.weight"], one["high_mixer.conv1.weight"][:64, :32])
    # every slice loads into the plain mixer of that split
    for high, state in ((64, two), (96, one), (0, mixer.sliced(0)), (128, mixer.sliced(128))):
        InceptionMixer(128, high).load_state_dict(state, strict=True)


@pytest.mark.parametrize("ratio_range,field", [((0.0, 0.05), "max_high"), ((0.95, 1.0), "max_low")])
def test_a_fixed_ratio_costs_nothing_extra(ratio_range, field):
    spec = SupernetSpec(NANO, IMG, ratio_range)
    conv, attention = spec.extremes()
    assert conv == attention  # one ramp only
    supernet = RampSupernet(spec, CLASSES)
    mixers = [m for m in supernet.modules() if isinstance(m, SharedMixer)]
    assert len(mixers) == NANO.num_blocks and all(getattr(m, field) == 0 for m in mixers)
    plain = build_iformer(**NANO.build_kwargs(), ramp=conv.ramp, img_size=IMG, num_classes=CLASSES)
    assert sum(p.numel() for p in supernet.parameters()) == sum(p.numel() for p in plain.parameters())
    assert sum(p.numel() for p in supernet.parameters()) == flops_model(NANO, IMG, CLASSES).params_of_heads(
        conv.ramp.high_heads(NANO))


def test_only_blocks_with_a_free_ratio_store_more_than_one_split():
    spec = SupernetSpec(NANO, IMG, (0.5, 0.6))
    ranges = spec.block_ranges()
    assert ranges[:2] == [(1, 1), (1, 1)] and ranges[-1] == (4, 5)
    supernet = RampSupernet(spec, CLASSES)
    mixers = [m for m in supernet.modules() if isinstance(m, SharedMixer)]
    for b, (mixer, (lo, hi), width) in enumerate(zip(mixers, ranges, NANO.block_widths)):
        stored = sum(p.numel() for p in mixer.parameters())
        largest = sum(p.numel() for p in InceptionMixer(width, hi * 32).parameters())
        if lo == hi:
            assert stored == largest, f"block {b}"
        else:
            assert stored > largest, f"block {b}"
        assert (mixer.max_high, mixer.max_low) == (hi * 32, width - lo * 32)


# -- sandwich rule -----------------------------------------------------------------------------------

def test_sandwich_is_the_mean_of_its_sub_networks_and_distills_from_the_larger_extreme():
    x, y = images(4), torch.tensor([0, 1, 2, 3])
    for distill in (False, True):
        spec = SupernetSpec(NANO, IMG, (0.0, 0.8), random_ramps=0, distill=distill)
        supernet = scrambled(RampSupernet(spec, CLASSES)).train()
        subs = supernet.sandwich((0, 0, 0))
        assert len(subs) == 2
        model = flops_model(NANO, IMG)
        assert model.of(subs[0].ramp) > model.of(subs[1].ramp)  # the teacher is the larger-FLOPs extreme
        loss = sandwich_backward(supernet, supernet, x, y, F.cross_entropy, contextlib.nullcontext, (0, 0, 0))
        got = {k: p.grad.clone() for k, p in supernet.named_parameters()}
        supernet.zero_grad()
        teacher = supernet(x, subs[0])
        student = supernet(x, subs[1])
        losses = [F.cross_entropy(teacher, y),
                  (-(teacher.detach().softmax(-1) * student.log_softmax(-1)).sum(-1).mean() if distill
                   else F.cross_entropy(student, y))]
        (sum(losses) / 2).backward()
        torch.testing.assert_close(loss, sum(losses).detach() / 2)
        for k, p in supernet.named_parameters():
            torch.testing.assert_close(got[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)


def test_sandwich_draws_are_seeded_by_the_step():
    spec = SupernetSpec(NANO, IMG, random_ramps=3, **ARCH_CHOICES)
    supernet = RampSupernet(spec, CLASSES)
    first = supernet.sandwich((0, 1, 2))
    assert len(first) == 5 and set(first[:2]) == set(spec.extremes())
    assert first == supernet.sandwich((0, 1, 2))
    assert first[2:] != supernet.sandwich((0, 1, 3))[2:]


def test_a_training_forward_updates_the_shared_batchnorm_statistics():
    spec = SupernetSpec(NANO, IMG)
    supernet = RampSupernet(spec, CLASSES).train()
    norm = supernet.body.patch_embed.norm1
    supernet(images(4), spec.sample(random.Random(0)))
    assert norm.num_batches_tracked.item() == 1 and norm.running_mean.abs().sum() > 0


# -- 3. training ---------------------------------------------------------------------------------------

def history(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / MODEL_FILE))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def space():
    return parse_space(SPACE)


@pytest.fixture(scope="module")
def trained(space, tmp_path_factory):
    """(folder, TrainResult) of the tiny space's supernet, trained in process."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("supernet")
    return folder, fit(supernet_config(space, folder, TEST_DEVICE))


def test_the_supernet_config_is_a_search_split_training_of_the_space(space):
    config = supernet_config(space, Path("out"), "cpu")
    assert config["supernet"] == space.supernet_spec().to_dict()
    assert config["img_size"] == IMG and config["epochs"] == EPOCHS
    assert config["data_split"] == "search" and config["device"] == "cpu"
    assert config["overrides"] == TINY and config["supernet"]["random_ramps"] == 1


def test_training_lowers_the_loss(trained):
    folder, result = trained
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == EPOCHS
    assert losses[-1] < 0.6 * losses[0] and losses[-1] < math.log(4), losses
    assert (folder / RESULT).is_file() and not (folder / POINTER).exists()
    stored = weights(folder)
    assert any(k.endswith("attn.qkv") for k in stored) and "body.head.weight" in stored
    assert json.loads((folder / "config.json").read_text())["supernet"] == parse_space(SPACE).supernet_spec().to_dict()


def test_both_extremes_learned(space, trained):
    folder, _ = trained
    supernet = load_supernet(folder, space)
    data = build_datasets("synthetic-freq", load_recipe("proxy", TINY, "nano"), IMG, split="search")
    x = torch.stack([data.train[i][0] for i in range(len(data.train))])
    y = torch.tensor([data.train[i][1] for i in range(len(data.train))])
    fresh = RampSupernet(space.supernet_spec(), 4)

    def loss(net: RampSupernet, sub: Subnet) -> float:
        model = net.extract(sub)
        recalibrate_batchnorm(model, [(x, y)])  # as scoring does: the supernet's own statistics are mixed
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()
    for sub in space.supernet_spec().extremes():
        assert loss(supernet, sub) < 0.5 * loss(fresh, sub)  # about 0.15 vs 1.45 (chance: ln 4 = 1.39)


def test_the_same_config_trains_the_same_supernet(space, trained, tmp_path):
    folder, result = trained
    again = fit(supernet_config(space, tmp_path, TEST_DEVICE))
    assert history(again.history) == history(result.history)
    assert_same_weights(weights(tmp_path), weights(folder))


# -- 4. kill -9 and resume --------------------------------------------------------------------------------

def test_a_killed_supernet_training_resumes_to_the_same_weights(space, trained, tmp_path):
    folder, result = trained
    space_file, out = tmp_path / "space.yaml", tmp_path / "cut"
    space_file.write_text(yaml.safe_dump(SPACE))
    command = [sys.executable, "cli.py", "supernet", str(space_file), "--out", str(out), "--device", "cpu",
               "--quiet"]
    victim = subprocess.Popen(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / POINTER).exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if victim.poll() is None:
        os.kill(victim.pid, signal.SIGKILL)
    assert (out / POINTER).exists(), "no checkpoint within 120 s"
    _, err = victim.communicate()
    assert victim.returncode == -signal.SIGKILL, f"the training ended before it was killed: {err[-3000:]}"
    assert json.loads((out / POINTER).read_text())["epoch"] < EPOCHS, "the run finished before it could be killed"
    assert not (out / RESULT).exists()
    resumed = fit(supernet_config(space, out, TEST_DEVICE))
    assert history(resumed.history) == history(result.history)
    assert_same_weights(weights(out), weights(folder))
    check_supernet(out, space)


# -- 5. bad inputs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio_range,block,heads,message", [
    ((0.0, 0.5), 5, 4, r"block 5 \(stage 3\): ratio 0.6667 is outside the supernet's space; it runs 0-0.5 there"),
    ((0.5, 1.0), 9, 3, r"block 9 \(stage 4\): ratio 0.375 is outside the supernet's space; it runs 0.5-1 there"),
])
def test_a_ramp_just_outside_the_range_names_the_block(ratio_range, block, heads, message):
    spec = SupernetSpec(NANO, IMG, ratio_range)
    supernet = RampSupernet(spec, CLASSES)
    ramp = list(spec.extremes()[0].ramp.high_heads(NANO))
    ramp[block] = heads  # one head past the range's end
    sub = Subnet(NANO, RampSchedule.from_high_heads(NANO, ramp))
    for call in (lambda: supernet(images(1), sub), lambda: supernet.extract(sub)):
        with pytest.raises(RampError, match=message):
            call()


@pytest.mark.parametrize("arch,message", [
    (Architecture((2, 2, 5, 2), NANO.embed_dims), r"depths \[2, 2, 5, 2\] exceed .* stage\(s\) \[3\]"),
    (Architecture(NANO.depths, (64, 128, 192, 288)), r"embed_dims \[64, 128, 192, 256\].*\[64, 128, 192, 288\]"),
    (Architecture(NANO.depths, NANO.embed_dims, mlp_ratio=6.0), "mlp_ratio 6.0 exceeds"),
])
def test_another_architecture_names_what_differs(arch, message):
    supernet = RampSupernet(SupernetSpec(NANO, IMG), CLASSES)
    sub = Subnet(arch, RampSchedule.handset(arch))
    for call in (lambda: supernet(images(1), sub), lambda: supernet.extract(sub)):
        with pytest.raises(SupernetError, match=message):
            call()


@pytest.mark.parametrize("change,names", [
    ({"ramp": {"parameterization": "per_stage", "range": [0.0, 0.9]}}, ["supernet.ratio_range"]),
    ({"img_size": 64}, ["supernet.img_size", "img_size"]),
    ({"search_architecture": {"mlp_ratio": [2.0, 4.0]}}, ["supernet.mlp_ratios"]),
    ({"proxy": {"epochs": EPOCHS, "overrides": {**TINY, "synthetic_train_per_class": 12}}},
     ["recipe.synthetic_train_per_class"]),
])
def test_a_supernet_of_another_space_is_refused(trained, change, names):
    folder, _ = trained
    other = parse_space({**SPACE, **change})
    with pytest.raises(SupernetError, match="was trained for another space or data") as info:
        check_supernet(folder, other)
    differs = str(info.value).split("differs in ")[1].split(")")[0].split(", ")
    assert differs == names
    # what only changes how it trains or samples is the same supernet
    check_supernet(folder, parse_space({**SPACE, "ramp": {"parameterization": "free"},
                                        "supernet": {"random_ramps": 3, "distill": True}}))


def test_an_unfinished_or_foreign_folder_is_refused(space, tmp_path):
    with pytest.raises(SupernetError, match=f"{RESULT} is missing"):
        check_supernet(tmp_path, space)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": NANO.to_dict()}))
    with pytest.raises(SupernetError, match=f"{RESULT} is missing"):
        check_supernet(tmp_path, space)  # a started, unfinished run
    (tmp_path / RESULT).write_text("{}")
    with pytest.raises(SupernetError, match="not a supernet"):
        check_supernet(tmp_path, space)


def test_a_one_shot_space_cannot_search_widths():
    widths = {"embed_dims": [[64, 96], [128], [192], [256]]}
    with pytest.raises(SpaceError, match="search_architecture.embed_dims: a supernet cannot share weights"):
        parse_space({**SPACE, "search_architecture": widths})
    assert parse_space({**SPACE, "method": "train", "search_architecture": widths}).arch_choices.embed_dims


def test_the_supernet_command_refuses_a_bad_space_in_one_line(capsys, tmp_path):
    space_file, out = tmp_path / "space.yaml", tmp_path / "out"
    space_file.write_text(yaml.safe_dump({**SPACE, "search_architecture": {"embed_dims": [[64, 96], [128], [192],
                                                                                          [256]]}}))
    with pytest.raises(SystemExit) as info:
        cli_main(["supernet", str(space_file), "--out", str(out), "--device", "cpu"])
    _, err = capsys.readouterr()
    assert info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("rampsearch supernet: error: ") and "search_architecture.embed_dims" in err
    assert not out.exists()


# -- 6. one-shot scoring ----------------------------------------------------------------------------------

def test_recalibration_sets_the_plain_mean_of_the_batches():
    spec = SupernetSpec(NANO, IMG)
    model = scrambled(RampSupernet(spec, CLASSES)).extract(spec.sample(random.Random(0)))
    batches = [(images(8, seed=1), torch.zeros(8)), (images(4, seed=2) * 2 + 1, torch.zeros(4))]
    norm, deep = model.patch_embed.norm1, model.patch_embed4.norm
    deep_before = deep.running_mean.clone()
    momentum = norm.momentum
    recalibrate_batchnorm(model, batches)
    with torch.no_grad():
        outputs = [model.patch_embed.proj1(x) for x, _ in batches]
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(0)  # per batch, then over batches
    var = torch.stack([o.transpose(0, 1).flatten(1).var(dim=1) for o in outputs]).mean(0)  # unbiased
    torch.testing.assert_close(norm.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.running_var, var, rtol=1e-4, atol=1e-5)
    assert norm.num_batches_tracked.item() == 2 and norm.momentum == momentum and not model.training
    assert not torch.allclose(deep.running_mean, deep_before)


def test_scores_are_deterministic_percentages_and_leave_the_supernet_alone(space, trained, monkeypatch):
    folder, _ = trained
    monkeypatch.setattr(one_shot, "_SCORERS", {})  # score_candidate's per-process cache: none left behind
    scorer = make_scorer(space, folder, TEST_DEVICE, score_images=8)
    assert sum(len(y) for _, y in scorer.score_batches) == 8 and sum(len(y) for _, y in scorer.bn_batches) == 16
    assert_same_weights(scorer.supernet.state_dict(), weights(folder))
    before = {k: v.clone() for k, v in scorer.supernet.state_dict().items()}
    spec = space.supernet_spec()
    candidates = [space.handset()] + [space.candidate(s.arch, s.ramp)
                                      for s in (spec.sample(random.Random(i)) for i in range(2))]
    for candidate in candidates:
        first, second = scorer.score(candidate).metrics, scorer.score(candidate).metrics
        assert 0 <= first["top1"] <= 100 and 0 <= first["top5"] <= 100 and first["loss"] > 0
        assert first == second and first["loss_se"] > 0
    assert_same_weights(scorer.supernet.state_dict(), before)  # scoring recalibrates a copy, not the supernet
    # a score is the extracted sub-network's, after BatchNorm recalibration on the bn images
    candidate = candidates[1]
    model = scorer.supernet.extract(Subnet(candidate.arch, candidate.ramp))
    stale = evaluate(model, scorer.score_batches)
    recalibrate_batchnorm(model, scorer.bn_batches)
    expected = evaluate(model, scorer.score_batches)
    scored = scorer.score(candidate)
    assert scored.metrics == expected and stale["loss"] != expected["loss"]
    # per image, on the same 8 images for every candidate: the values the mean and paired comparisons use
    assert scored.losses.shape == scored.hits.shape == (8,)
    assert scored.losses.mean().item() == pytest.approx(expected["loss"])
    assert scored.per_image("top1").mean().item() == pytest.approx(expected["top1"])
    row = score_candidate(space, folder, candidates[0])
    assert row["epoch"] == 1 and row["history"] == [{k: row[k] for k in ("epoch", *expected)}]


# -- found while writing these tests, and fixed ----------------------------------------------------------

def test_a_one_shot_space_whose_range_excludes_the_hand_set_ramp_is_refused():
    data = {**SPACE, "ramp": {"parameterization": "per_stage", "range": [0.6, 1.0]}}
    with pytest.raises(SpaceError, match="ramp.range"):  # the supernet could not run the yardstick
        parse_space(data)


def test_method_one_shot_on_the_command_line_checks_the_space_too(tmp_path):
    space = tmp_path / "narrow.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "method": "train",
                                     "ramp": {"parameterization": "per_stage", "range": [0.6, 1.0]}}))
    with pytest.raises(SpaceError, match="ramp.range"):  # before anything is written or trained
        run_search(space, tmp_path / "run", SearchOptions(trials=1, study="narrow", method=ONE_SHOT),
                   show_progress=False, log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_the_same_architecture_spelled_out_is_the_same_supernet(trained):
    folder, _ = trained
    spelled = {"depths": list(NANO.depths), "embed_dims": list(NANO.embed_dims)}
    check_supernet(folder, parse_space({**SPACE, "architecture": spelled}))


def test_scores_on_an_image_folder_do_not_depend_on_the_process_rng(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "data"
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(6):
            pixels = np.random.RandomState(10 * c + i).randint(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    space = parse_space({**SPACE, "proxy": {"epochs": 1, "data": str(root), "overrides": {
        "batch_size": 4, "eval_batch_size": 8, "workers": 0}}, "supernet": {"random_ramps": 0, "score_images": 2,
                                                                            "bn_images": 4}})
    fit(supernet_config(space, tmp_path / "supernet", TEST_DEVICE))
    scorers = []
    for seed in (1, 2):  # whatever the process's random streams are
        random.seed(seed)
        torch.manual_seed(seed)
        scorers.append(make_scorer(space, tmp_path / "supernet", TEST_DEVICE))
    first, second = (s.bn_batches for s in scorers)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, second))


# -- data-parallel ---------------------------------------------------------------------------------------

def _ddp_supernet_worker(rank: int, port: int, config: dict, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = fit(config)
    results[rank] = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in result.history]


def test_two_process_gloo_ddp_trains_the_supernet_with_the_same_sandwich_on_every_rank(tmp_path):
    """Every rank draws the same sub-networks each step (else DDP would average gradients of different
    models); unused trailing blocks of a depth space are tolerated."""
    import socket

    import torch.multiprocessing as mp

    spec = SupernetSpec(NANO, IMG, parameterization="per_stage", depths=ARCH_CHOICES["depths"], random_ramps=1)
    config = {"supernet": spec.to_dict(), "img_size": IMG, "epochs": 1, "overrides": TINY, "device": TEST_DEVICE,
              "data_split": "search", "quiet": True, "out": str(tmp_path / "ddp")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_ddp_supernet_worker, args=(port, config, results), nprocs=2, join=True)
    assert results[0] == results[1] and len(results[0]) == 1  # metrics reduced over both processes
    assert math.isfinite(results[0][0]["train_loss"])
    assert (tmp_path / "ddp" / MODEL_FILE).is_file()
