"""The decoded proxy cache and batch augmentation on the training device (rampsearch.data.cache, .augment,
.tensors): built once and shared, rebuilt when sources change or the cache is damaged, the same file
selection as timm's path, timm's eval crop, seeded augmentation, and training through it."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from devices import TEST_DEVICE  # tests/devices.py
from rampsearch.config import ConfigError, load_recipe
from rampsearch.data import DataError, ImageBatches, TensorImages, build_datasets
from rampsearch.data.augment import CenterCrop, Normalize, TrainAugment, crop_boxes
from rampsearch.data.cache import AUTO_MAX_IMG_SIZE, IMAGES, MANIFEST, cache_root, stored_size
from rampsearch.train import fit

REPO = Path(__file__).resolve().parents[1]


def recipe(**overrides):
    return load_recipe("proxy", {"data_cache": "on", **overrides})


def _photo(path: Path, seed: int, size=(40, 30)) -> None:
    """A small non-square photo-like image: smooth colour ramps and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], np.full_like(x, 40 * (seed % 5))], -1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _folder(root: Path, classes=("cat", "dog"), per_class=6) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _photo(root / split / name / f"{i}.png", 10 * c + i)
    return root


def _builds(caplog) -> int:
    return sum("building the proxy cache" in r.getMessage() for r in caplog.records)


def _cache_folders() -> list[Path]:
    return sorted(p for p in cache_root().iterdir() if p.is_dir())


def test_cache_is_built_once_then_reused(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="rampsearch.data"):
        first = build_datasets(str(root), recipe(), 16)
        second = build_datasets(str(root), recipe(data_classes=["dog", "cat"]), 16, "search")
    assert _builds(caplog) == 2  # train/ and val/ each once; the second call reuses both
    assert isinstance(first.train, TensorImages) and first.train.images.shape[1:] == (17, 17, 3)  # floor(16 / 0.9)
    assert len(second.train) + len(second.val) == len(first.train)
    manifest = json.loads((Path(first.train.images.filename).parent / MANIFEST).read_text())
    assert manifest["classes"] == ["cat", "dog"] and len(manifest["files"]) == 12


def test_cache_is_rebuilt_when_the_sources_change(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    build_datasets(str(root), recipe(), 16)
    _photo(root / "train" / "cat" / "new.png", 99)
    with caplog.at_level(logging.INFO, logger="rampsearch.data"):
        data = build_datasets(str(root), recipe(), 16)
    assert _builds(caplog) == 1 and "does not match its image folder" in caplog.text  # train/ only
    assert len(data.train) == 13
    os.utime(root / "train" / "dog" / "0.png", ns=(1, 1))  # touched: its modification time changed
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rampsearch.data"):
        build_datasets(str(root), recipe(), 16)
    assert _builds(caplog) == 1


@pytest.mark.parametrize("damage", ["truncate images", "garbage manifest"])
def test_damaged_cache_is_rebuilt(tmp_path, caplog, damage):
    root = _folder(tmp_path / "data")
    before = build_datasets(str(root), recipe(), 16)
    folder = Path(before.train.images.filename).parent
    expected = np.array(before.train.images)
    if damage == "truncate images":
        with (folder / IMAGES).open("r+b") as f:
            f.truncate(100)
    else:
        (folder / MANIFEST).write_text("{not json")
    with caplog.at_level(logging.INFO, logger="rampsearch.data"):
        after = build_datasets(str(root), recipe(), 16)
    assert "is damaged" in caplog.text and _builds(caplog) == 1
    assert np.array_equal(np.array(after.train.images), expected)


def test_processes_building_at_once_build_once(tmp_path):
    """Two processes asking for the same cache at the same time: one builds under the lock, the other waits
    and reads what it built."""
    root = _folder(tmp_path / "data", per_class=40)
    script = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
              "from rampsearch.config import load_recipe\nfrom rampsearch.data import build_datasets\n"
              f"d = build_datasets({str(root)!r}, load_recipe('proxy', {{'data_cache': 'on'}}), 16)\n"
              "print('images', int(d.train.images.sum()))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=env) for _ in range(2)]
    outputs = [child.communicate(timeout=120)[0] for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    assert sum(out.count("building the proxy cache") for out in outputs) == 2  # train/ and val/, once each
    sums = {line for out in outputs for line in out.splitlines() if line.startswith("images")}
    assert len(sums) == 1
    assert not [p for p in cache_root().iterdir() if ".building-" in p.name or ".old-" in p.name]


def test_eval_crop_is_timms_eval_transform(tmp_path):
    root = _folder(tmp_path / "data")
    cached = build_datasets(str(root), recipe(), 16)
    plain = build_datasets(str(root), recipe(data_cache="off"), 16)
    for i in range(len(plain.val)):
        ours, label = cached.val[i]
        theirs, their_label = plain.val[i]
        assert label == their_label and ours.shape == theirs.shape == (3, 16, 16)
        assert (ours - theirs).abs().max() < 1e-5  # the same PIL resize, crop and normalization


def test_which_path_auto_takes(tmp_path):
    root = _folder(tmp_path / "data")
    assert isinstance(build_datasets(str(root), recipe(data_cache="auto"), 16).train, TensorImages)
    big = build_datasets(str(root), recipe(data_cache="auto"), AUTO_MAX_IMG_SIZE + 16)
    assert hasattr(big.train, "reader")  # timm's PIL path above the proxy resolutions
    randaug = build_datasets(str(root), recipe(data_cache="auto", auto_augment="rand-m9-mstd0.5-inc1"), 16)
    assert hasattr(randaug.train, "reader")
    with pytest.raises(DataError, match=r"data_cache: on cannot apply auto_augment 'rand-m9-mstd0.5-inc1'"):
        build_datasets(str(root), recipe(auto_augment="rand-m9-mstd0.5-inc1"), 16)
    assert hasattr(build_datasets(str(root), recipe(data_cache="off"), 16).train, "reader")


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("on", "on"), (True, "on"), (False, "off")])
def test_data_cache_values(value, expected):
    assert load_recipe("proxy", {"data_cache": value}).data_cache == expected  # --set data_cache=off is YAML false


def test_bad_data_cache_value_is_named():
    with pytest.raises(ConfigError, match="data_cache must be auto, on or off, got 'sometimes'"):
        load_recipe("proxy", {"data_cache": "sometimes"})


def test_stored_size_is_timms_eval_resize():
    assert stored_size(64, 0.9) == 71 and stored_size(224, 0.875) == 256 and stored_size(32, 1.0) == 32


# -- batch augmentation ---------------------------------------------------------------------------------

def test_crop_boxes_follow_scale_and_ratio():
    boxes = crop_boxes(2000, 71, 71, (0.35, 1.0), (0.75, 4 / 3), torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 71).all() and (left + w <= 71).all()
    share = h * w / 71 ** 2
    assert share.min() >= 0.33 and share.max() <= 1.0 and share.std() > 0.1
    assert (w / h).min() >= 0.7 and (w / h).max() <= 1.4


def test_train_augment_is_seeded_and_flips():
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8)
    normalize = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    augment = TrainAugment(16, (0.35, 1.0), (0.75, 4 / 3), 0.5, 0.4, "bilinear", normalize, reprob=0.25)
    a = augment(images, torch.Generator().manual_seed(1))
    assert a.shape == (16, 3, 16, 16) and a.dtype == torch.float32
    import random
    random.seed(0)  # random erasing draws from Python's random, as timm's does
    b = augment(images, torch.Generator().manual_seed(1))
    random.seed(0)
    c = augment(images, torch.Generator().manual_seed(1))
    assert torch.equal(b, c) and not torch.equal(b, augment(images, torch.Generator().manual_seed(2)))
    # a full-image "crop" with no jitter reproduces the image, flipped or not
    whole = TrainAugment(20, (1.0, 1.0), (1.0, 1.0), 1.0, 0.0, "bilinear", normalize)
    assert (whole(images, torch.Generator()) - normalize(images.flip(-1))).abs().max() < 1e-3
    centre = CenterCrop(16, normalize)(images)
    assert torch.equal(centre, normalize(images[..., 2:18, 2:18]))


def test_image_batches_match_a_dataloader_over_the_same_sampler():
    """ImageBatches forms the batches a DataLoader would, from the same sampler, in one indexing each."""
    from torch.utils.data import DataLoader, DistributedSampler

    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    data = TensorImages(images, torch.arange(50) % 5, Normalize((0.5,) * 3, (0.2,) * 3))
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler.set_epoch(2)
    ours = list(ImageBatches(data, 8, "cpu", (3, 0), sampler=sampler, drop_last=True))
    theirs = list(DataLoader(data, batch_size=8, sampler=sampler, drop_last=True))
    assert len(ours) == len(theirs) == 6
    for (x, y), (u, v) in zip(ours, theirs):
        assert torch.equal(x, u) and torch.equal(y, v)


def test_training_on_a_cached_folder_is_deterministic(tmp_path):
    root = _folder(tmp_path / "data", per_class=16)
    config = {"variant": "nano", "img_size": 32, "data": str(root), "epochs": 2, "device": TEST_DEVICE, "quiet": True,
              "overrides": {"batch_size": 8, "eval_batch_size": 16, "data_cache": "on"}}
    first, second = fit(config), fit(config)
    assert first.history == [{**row, **{k: first.history[i][k] for k in ("train_seconds", "img_s", "epoch_seconds")}}
                             for i, row in enumerate(second.history)]
    assert np.isfinite(first.final["loss"])
