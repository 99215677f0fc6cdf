"""The search split: search trials (`data_split: search`) train on the training data minus a seeded
per-class share of it and are scored on that share, never on the val images the final comparison reports."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rampsearch.train as train_module
from devices import TEST_DEVICE  # tests/devices.py
from rampsearch.config import ConfigError, TrainConfig, load_recipe
from rampsearch.data import (FINAL, SEARCH, SEARCH_SPLIT_STREAM, DataError, TensorImages, build_datasets,
                             check_data, search_split_indices)
from rampsearch.search.load import load_space
from rampsearch.search.trial import candidate_spec, train_config
from rampsearch.train import fit, preflight

REPO = Path(__file__).resolve().parents[1]
SMALL = {"synthetic_low_classes": 2, "synthetic_high_classes": 3, "synthetic_train_per_class": 10,
         "synthetic_val_per_class": 4}


def recipe(**overrides):
    return load_recipe("proxy", overrides)


def digests(images: torch.Tensor) -> list[str]:
    return [hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images]


# -- synthetic-freq ------------------------------------------------------------------------------------

def test_synthetic_search_split_partitions_the_train_set_and_avoids_val():
    r = recipe(**SMALL, search_split=0.35)
    final, search = build_datasets("synthetic-freq", r, 32), build_datasets("synthetic-freq", r, 32, SEARCH)
    for part in (search.train, search.val):  # in memory: train.py's loaders use no worker processes
        assert isinstance(part, TensorImages)
    assert (search.num_classes, search.classes) == (final.num_classes, final.classes)
    held, kept, val = digests(search.val.images), digests(search.train.images), digests(final.val.images)
    assert len(set(held)) == len(held) and not set(held) & set(kept) and not set(held) & set(val)
    assert sorted(held + kept) == sorted(digests(final.train.images))  # together: exactly the train set
    assert torch.equal(torch.bincount(search.val.labels, minlength=6), torch.full((6,), round(0.35 * 10)))
    assert torch.equal(torch.bincount(search.train.labels, minlength=6), torch.full((6,), 10 - round(0.35 * 10)))
    image, label = search.val[0]  # normalized like every other split
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and 0 <= label < 6


def test_synthetic_search_split_is_seeded_by_split_seed():
    def held(**overrides) -> list[str]:
        return digests(build_datasets("synthetic-freq", recipe(**SMALL, **overrides), 32, SEARCH).val.images)

    assert held() == held()
    assert held() != held(split_seed=1)
    assert held() == held(val_split=0.3)  # the val split's share does not move it


def test_search_split_indices_per_class_counts_and_bounds():
    labels = np.repeat([0, 1, 2, 3], [1, 2, 5, 12])
    np.random.default_rng(0).shuffle(labels)
    kept, held = search_split_indices(labels, 0.2, seed=0)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[held], minlength=4).tolist() == [0, 1, 1, 2]  # at least 1, never a whole class
    assert np.bincount(labels[kept], minlength=4).tolist() == [1, 1, 4, 10]
    again_kept, again_held = search_split_indices(labels, 0.2, seed=0)
    assert np.array_equal(again_held, held) and np.array_equal(again_kept, kept)
    assert not np.array_equal(search_split_indices(np.arange(40) % 2, 0.5, seed=1)[1],
                              search_split_indices(np.arange(40) % 2, 0.5, seed=2)[1])


def test_search_stream_is_not_the_val_splits_stream():
    # default_rng([s, 0]) is default_rng(s): a zero stream word would replay the val split's permutations
    assert SEARCH_SPLIT_STREAM != 0
    labels = np.zeros(50, int)
    _, held = search_split_indices(labels, 0.2, seed=0)
    val_like = np.sort(np.random.default_rng(0).permutation(50)[:10])  # what the val split's stream would pick
    assert not np.array_equal(held, val_like)


def test_synthetic_search_split_needs_two_training_images_per_class():
    one = recipe(**{**SMALL, "synthetic_train_per_class": 1})
    assert check_data("synthetic-freq", one, 32) is None  # fine for a final run
    for function in (check_data, build_datasets):
        with pytest.raises(DataError, match="synthetic_train_per_class 1 .*search split.*>= 2"):
            function("synthetic-freq", one, 32, SEARCH)


# -- image folders ---------------------------------------------------------------------------------------

def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)


def _two_folders(root: Path, classes=("cat", "dog"), per_class=10) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _png(root / split / name / f"{i}.png", 40 * c + i)
    return root


def _one_folder(root: Path, classes=("cat", "dog"), per_class=10) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _png(root / name / f"{i}.png", 40 * c + i)
    return root


def _samples(dataset) -> list[tuple[str, int]]:
    """(file, label) pairs of an image-folder set: timm's (the PIL path) or the decoded cache's."""
    return dataset.reader.samples if hasattr(dataset, "reader") else dataset.samples


def _files(dataset) -> set[str]:
    return {path for path, _ in _samples(dataset)}


@pytest.mark.parametrize("cache", ["off", "on"])
@pytest.mark.parametrize("layout", [_two_folders, _one_folder])
def test_image_folder_search_split_is_held_out_of_train_and_disjoint_from_val(tmp_path, layout, caplog, cache):
    root = layout(tmp_path / "data")
    r = recipe(search_split=0.3, val_split=0.2, data_cache=cache)
    final = build_datasets(str(root), r, 16)
    with caplog.at_level("INFO", logger="rampsearch.data"):
        search = build_datasets(str(root), r, 16, SEARCH)
    train, val, held, kept = _files(final.train), _files(final.val), _files(search.val), _files(search.train)
    assert held and held < train and not held & val and not held & kept
    assert held | kept == train
    per_class = {c: sum(Path(p).parent.name == c for p in held) for c in final.classes}
    n_train = {c: sum(Path(p).parent.name == c for p in train) for c in final.classes}
    assert per_class == {c: max(1, round(0.3 * n)) for c, n in n_train.items()}
    for path, label in _samples(search.val):  # the same class mapping as the final run's
        assert final.classes[label] == Path(path).parent.name
    assert f"of which {len(held)} are held out as the search split" in caplog.text
    # the held-out images get the eval transform (no augmentation), the rest the training transform
    assert repr(search.val.transform) == repr(final.val.transform)
    assert repr(search.train.transform) == repr(final.train.transform) != repr(final.val.transform)
    assert torch.equal(search.val[0][0], search.val[0][0])
    # seeded by split_seed
    assert _files(build_datasets(str(root), r, 16, SEARCH).val) == held
    other = build_datasets(str(root), recipe(search_split=0.3, val_split=0.2, split_seed=7), 16, SEARCH)
    assert _files(other.val) != held


def test_image_folder_search_split_comes_after_data_fraction(tmp_path):
    root = _two_folders(tmp_path, per_class=20)
    r = recipe(data_fraction=0.5, search_split=0.2)
    final, search = build_datasets(str(root), r, 16), build_datasets(str(root), r, 16, SEARCH)
    assert _files(search.val) | _files(search.train) == _files(final.train)
    assert (len(search.val), len(search.train)) == (2 * 2, 2 * 8)


def test_image_folder_with_one_training_image_per_class_has_no_search_split(tmp_path):
    root = _two_folders(tmp_path, per_class=1)
    assert len(build_datasets(str(root), recipe(), 16).train) == 2
    with pytest.raises(DataError, match="single training image.*search split"):
        build_datasets(str(root), recipe(), 16, SEARCH)


# -- configuration ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2])
def test_search_split_out_of_range_is_named(value):
    with pytest.raises(ConfigError, match=r"search_split must be in \(0, 1\)"):
        recipe(search_split=value)


def test_shipped_recipes_hold_out_a_fifth():
    assert load_recipe("proxy").search_split == load_recipe("paper").search_split == 0.2


def test_bad_data_split_is_named():
    assert TrainConfig().data_split == FINAL
    for make in (lambda: TrainConfig.from_dict({"data_split": "bogus"}), lambda: TrainConfig(data_split="val"),
                 lambda: preflight({"variant": "nano", "data_split": "bogus"})):
        with pytest.raises(ConfigError, match="data_split must be 'final' .* or 'search'"):
            make()
    with pytest.raises(ConfigError, match="data_split"):
        build_datasets("synthetic-freq", recipe(**SMALL), 32, "val")


def test_search_trials_use_the_search_split_and_retraining_val():
    space = load_space(REPO / "search_spaces" / "demo.yaml")
    spec = candidate_spec(space, space.handset())
    assert train_config(space, spec, None)["data_split"] == SEARCH
    assert train_config(space, spec, None, data_split=FINAL)["data_split"] == FINAL


# -- training -------------------------------------------------------------------------------------------

def test_fit_on_the_search_split_evaluates_the_held_out_images(monkeypatch):
    built = []

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    original = train_module.build_datasets
    monkeypatch.setattr(train_module, "build_datasets", spy)
    overrides = {"synthetic_low_classes": 2, "synthetic_high_classes": 2, "synthetic_train_per_class": 20,
                 "synthetic_val_per_class": 8, "batch_size": 16, "warmup_epochs": 0.5, "search_split": 0.35}
    config = TrainConfig(architecture={"depths": [1, 1, 1, 1], "embed_dims": [32, 32, 64, 64]}, img_size=32,
                         device=TEST_DEVICE, quiet=True, epochs=1, overrides=overrides, data_split=SEARCH)
    result = fit(config)
    (data,) = built
    assert (len(data.train), len(data.val)) == (4 * 13, 4 * 7)  # round(0.35 * 20) = 7 held out per class
    assert torch.equal(data.val.images, build_datasets("synthetic-freq", load_recipe("proxy", overrides), 32,
                                                       SEARCH).val.images)
    hits = result.final["top1"] * len(data.val) / 100  # top-1 is a count of the 28 held-out images
    assert abs(hits - round(hits)) < 1e-6
