"""Data: synthetic-freq determinism, shape and pinned output; image folders with bad data (each error
names its path); one-class sets refused; the pre-flight `check_data`."""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rampsearch.config import ConfigError, load_recipe
import rampsearch.data.folders as folders_module
import rampsearch.data.synthetic as synthetic_module
from rampsearch.data import DataError, build_datasets, check_data, synthetic_freq


def recipe(**overrides):
    return load_recipe("proxy", overrides)


def samples(dataset) -> list[tuple[str, int]]:
    """(file, label) pairs of an image-folder set: timm's (the PIL path) or the decoded cache's."""
    return dataset.reader.samples if hasattr(dataset, "reader") else dataset.samples


# image-folder behaviour that both loading paths must share: timm's PIL path and the decoded proxy cache
both_paths = pytest.mark.parametrize("cache", ["off", "on"])


# -- synthetic-freq -----------------------------------------------------------------------------------

# SHA-256 over (images as uint8 bytes, then labels as little-endian int64) of 12 images, seed 3, made
# by the generator before its draws were named (_Draw). Any change to how an image is made, however
# small, changes these: if that is intended, say so in BENCHMARKS.md (its results used the old images)
# and update the hashes.
PINNED = [  # texture, split, img_size, low classes, high classes, sha256
    ("grating", "train", 32, 2, 3, "b021eecdb6b28b9dc710e88480f3986d5af0e47b4e9948122f5ff804150ab223"),
    ("grating", "train", 32, 4, 2, "ea4ce64caa1f4e58c62334c2fcdac3a57fe86cfbb655c3b5203e14f8d0d1c584"),
    ("grating", "train", 64, 2, 3, "ad59bb6ce658b3f227250677bc6498cbbf30f8fb4efa2be584da634eeb4f66e4"),
    ("grating", "train", 64, 4, 2, "5aa6c7e932ab44ec60b7b746527687d5e1176f8887ed5e1d2f39a4af4347ec33"),
    ("grating", "val", 32, 2, 3, "abc363972b8b0dcd900598a28d4bde4396b2da99172aa3912534d4c2562ab56f"),
    ("grating", "val", 32, 4, 2, "6d681583ae0c098deb9bdc05aa23185790253785a4d0e44f473986c70beb5bd4"),
    ("grating", "val", 64, 2, 3, "c9bbe3db2d4f372e6d842c5426f8ff2146ce17e3790e0ca9511942f82021e8e7"),
    ("grating", "val", 64, 4, 2, "d4df1bd81e7533159cc15a43d3d19782e75652f857a6515afc937f833f301135"),
    ("dot-lattice", "train", 32, 2, 3, "819fbf13cbcf104235e25d340ed3afd573f389f306ed0e00a0bc861893079666"),
    ("dot-lattice", "train", 32, 4, 2, "f14f51199b538631a709b77c435907137d94e52494ddddd88b493886fd2c618b"),
    ("dot-lattice", "train", 64, 2, 3, "083c32d1b5272e19b27897819a41765a75aef3ffaecc5e381e5a7f174eb67486"),
    ("dot-lattice", "train", 64, 4, 2, "451edb72ff433e31ebcc810f3346a23f4a2fe509c496df8e51983bd71564b741"),
    ("dot-lattice", "val", 32, 2, 3, "9683799883b17bb7b010e0ebfcd4ede511639d8d54261ba979da34bccd5851a1"),
    ("dot-lattice", "val", 32, 4, 2, "beeff723ace74ef46b8b0fb59dc4839fff39caa6a3b0d5f6093e3ed41993482b"),
    ("dot-lattice", "val", 64, 2, 3, "0276d66c89002923034df0f66cd7d9d215b94416f170f695decea2897898c68b"),
    ("dot-lattice", "val", 64, 4, 2, "72c815c5f653159ccf77212a2df279fe5cc082bd54262b782495058d40b66c81"),
]


@pytest.mark.parametrize("texture, split, size, low, high, expected", PINNED)
def test_synthetic_images_are_pinned(texture, split, size, low, high, expected):
    images, labels = synthetic_freq(low, high, 12, size, 3, split, texture)
    digest = hashlib.sha256(images.numpy().tobytes())
    digest.update(labels.numpy().astype("<i8").tobytes())
    assert digest.hexdigest() == expected, "synthetic-freq's images changed; see PINNED"


def test_synthetic_is_deterministic_per_index_and_balanced():
    images, labels = synthetic_freq(2, 3, 24, 32, 7, "train")
    assert images.shape == (24, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(torch.bincount(labels), torch.full((6,), 4))
    more, more_labels = synthetic_freq(2, 3, 36, 32, 7, "train")  # a larger set starts with the same images
    assert torch.equal(more[:24], images) and torch.equal(more_labels[:24], labels)
    assert not torch.equal(synthetic_freq(2, 3, 24, 32, 8, "train")[0], images)  # another seed
    assert not torch.equal(synthetic_freq(2, 3, 24, 32, 7, "val")[0], images)  # the other split


def test_synthetic_images_vary_within_a_class():
    images, labels = synthetic_freq(2, 2, 16, 32, 0, "train")
    same_class = images[labels == 0].float()
    assert (same_class - same_class.mean(0)).abs().mean() > 10  # nuisance variation, not copies


def test_synthetic_datasets_normalize_and_count():
    data = build_datasets("synthetic-freq", recipe(synthetic_low_classes=2, synthetic_high_classes=2,
                                                   synthetic_train_per_class=5, synthetic_val_per_class=3), 32)
    assert (len(data.train), len(data.val), data.num_classes) == (20, 12, 4)
    image, label = data.train[3]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and label == 3
    assert -3 < image.mean() < 3


def test_dot_lattice_is_deterministic_and_its_rows_follow_the_class_orientation():
    images, labels = synthetic_freq(1, 2, 40, 64, 3, "train", "dot-lattice")  # orientations 0 and 90 degrees
    assert torch.equal(synthetic_freq(1, 2, 60, 64, 3, "train", "dot-lattice")[0][:40], images)
    assert not torch.equal(synthetic_freq(1, 2, 40, 64, 3, "train")[0], images)  # not the grating

    def correlation(shift: tuple[int, int]) -> torch.Tensor:
        """Per image: mean product of the centred image with itself moved by `shift` (pixels)."""
        x = images.float().mean(1)
        x = x - x.mean((1, 2), keepdim=True)
        return (x * torch.roll(x, shift, dims=(1, 2))).mean((1, 2))

    # dots are 5-6.5 px apart along the rows: the image matches itself one dot along a row, not across it
    along_x = torch.stack([correlation((0, d)) for d in (5, 6)]).amax(0)
    along_y = torch.stack([correlation((d, 0)) for d in (5, 6)]).amax(0)
    horizontal = along_x > along_y
    assert horizontal[labels == 0].float().mean() > 0.75 and horizontal[labels == 1].float().mean() < 0.25


def test_bad_synthetic_texture_is_named():
    with pytest.raises(ConfigError, match="synthetic_texture must be grating or dot-lattice"):
        recipe(synthetic_texture="stripes")


@pytest.mark.parametrize("overrides", [{"synthetic_low_classes": 9}, {"synthetic_high_classes": 0},
                                       {"synthetic_val_per_class": 0}])
def test_synthetic_rejects_bad_class_counts(overrides):
    with pytest.raises(DataError, match="synthetic_"):
        build_datasets("synthetic-freq", recipe(**overrides), 32)
    with pytest.raises(DataError, match="synthetic_"):
        check_data("synthetic-freq", recipe(**overrides), 32)


def test_synthetic_with_one_class_is_refused():
    one = recipe(synthetic_low_classes=1, synthetic_high_classes=1)
    for function in (build_datasets, check_data):
        with pytest.raises(DataError, match="one class; top-1 over one class is always 100%"):
            function("synthetic-freq", one, 32)


def test_synthetic_too_large_for_memory_is_refused_at_once():
    start = time.perf_counter()
    for function in (check_data, build_datasets):  # build checks before it allocates anything
        with pytest.raises(DataError, match=r"img_size 100000: 3200 images need about [\d,]+ bytes") as err:
            function("synthetic-freq", recipe(), 100_000)
        assert "\n" not in str(err.value) and "--img-size" in str(err.value)
    assert time.perf_counter() - start < 2


def test_synthetic_memory_is_checked_against_physical_memory(monkeypatch):
    assert check_data("synthetic-freq", recipe(), 64) is None  # 3200 images at 64 px: ~0.3 GB
    need = synthetic_module._synthetic_bytes(recipe(), 64)
    assert 3200 * 3 * 64 * 64 * 5 < need < 1e9  # uint8 images, float32 noise of the train split, temporaries
    monkeypatch.setattr(synthetic_module, "_physical_memory", lambda: need - 1)
    with pytest.raises(DataError, match=f"need about {need:,} bytes"):
        check_data("synthetic-freq", recipe(), 64)
    monkeypatch.setattr(synthetic_module, "_physical_memory", lambda: None)  # OS does not tell: not refused
    assert check_data("synthetic-freq", recipe(), 100_000) is None


# -- image folders --------------------------------------------------------------------------------------

def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)


def _tree(root: Path, classes=("cat", "dog", "emu"), per_class=4) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _png(root / split / name / f"{i}.png", 40 * c + i)
    return root


@both_paths
def test_image_folder_labels_follow_train_class_folders(tmp_path, cache):
    root = _tree(tmp_path)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")  # ignored: no image extension
    data = build_datasets(str(root), recipe(data_cache=cache), 16)
    assert data.classes == ["cat", "dog", "emu"] and data.num_classes == 3
    assert (len(data.train), len(data.val)) == (12, 12)
    for path, label in samples(data.val):
        assert data.classes[label] == Path(path).parent.name
    image, label = data.val[5]
    assert image.shape == (3, 16, 16) and label == 1


@both_paths
def test_corrupt_file_is_skipped_and_counted(tmp_path, caplog, cache):
    root = _tree(tmp_path)
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG this is not really a png")
    with caplog.at_level(logging.WARNING, logger="rampsearch.data"):
        data = build_datasets(str(root), recipe(data_cache=cache), 16)
    assert len(data.train) == 12
    assert "skipped 1 unreadable image file(s)" in caplog.text and "broken.png" in caplog.text


@both_paths
def test_corrupt_file_is_an_error_when_strict(tmp_path, cache):
    root = _tree(tmp_path)
    (root / "train" / "dog" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="broken.png"):
        build_datasets(str(root), recipe(strict_data=True, data_cache=cache), 16)


@both_paths
def test_truncated_png_is_caught_by_strict_decoding(tmp_path, cache):
    root = _tree(tmp_path)
    good = (root / "train" / "cat" / "0.png").read_bytes()
    (root / "train" / "cat" / "cut.png").write_bytes(good[: len(good) // 2])  # header intact, pixels missing
    with pytest.raises(DataError, match="cut.png"):
        build_datasets(str(root), recipe(strict_data=True, data_cache=cache), 16)


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = _tree(tmp_path)
    (root / "train" / "fox").mkdir()
    with pytest.raises(DataError, match=r"train/fox holds no image files"):
        build_datasets(str(root), recipe(), 16)


def test_class_of_only_corrupt_files_is_an_error(tmp_path):
    root = _tree(tmp_path)
    (root / "train" / "fox").mkdir()
    (root / "train" / "fox" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"train/fox: none of its 1 image files"):
        build_datasets(str(root), recipe(), 16)


def _without_images(folder: Path) -> None:
    for image in folder.glob("*.png"):
        image.unlink()
    (folder / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("function", [build_datasets, check_data])
@pytest.mark.parametrize("make, message", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "has no class folders"),
    (lambda root: (root / "train" / "a").mkdir(parents=True), "has train/ but no val/"),
    (lambda root: _tree(root) and (root / "val" / "yak").mkdir(), "'yak' is not among the train classes"),
    (lambda root: _tree(root) and (root / "train" / "fox").mkdir(), "train/fox holds no image files"),
    (lambda root: _without_images(_tree(root) / "val" / "emu"), "val/emu holds no image files"),
    (lambda root: _tree(root, classes=("cat",)), "train has a single class folder .'cat'.; top-1 over one class"),
    (lambda root: _png(root / "cat" / "0.png", 0), "data has a single class folder .'cat'.; top-1 over one class"),
])
def test_bad_folders_give_errors_naming_the_path(tmp_path, make, message, function):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=message) as err:
        function(str(root), recipe(), 16)
    assert str(root) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("function", [build_datasets, check_data])
@pytest.mark.parametrize("classes", [1, ["dog"], ["dog", "dog"]])
def test_data_classes_selecting_one_class_is_refused(tmp_path, function, classes):
    root = _tree(tmp_path)
    with pytest.raises(DataError, match=r"^data_classes: .* of .*train; top-1 over one class is always 100% "
                                        r"and means nothing; at least 2 classes are needed$"):
        function(str(root), recipe(data_classes=classes), 16)


def test_check_data_passes_a_good_folder_without_opening_images(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    (root / "train" / "dog" / "broken.png").write_bytes(b"not decoded by the check")

    def no_opening(*args, **kwargs):
        raise AssertionError("check_data opened an image")

    monkeypatch.setattr(folders_module.Image, "open", no_opening)
    start = time.perf_counter()
    assert check_data(str(root), recipe(), 16) is None
    assert check_data(str(root), recipe(data_classes=["emu", "cat"]), 16) is None
    assert time.perf_counter() - start < 2


@both_paths
def test_one_folder_is_split_per_class_with_a_seed(tmp_path, cache):
    for c in ("a", "b"):
        for i in range(10):
            _png(tmp_path / c / f"{i}.png", i)
    data = build_datasets(str(tmp_path), recipe(val_split=0.3, data_cache=cache), 16)
    assert (len(data.train), len(data.val)) == (14, 6)
    train = {p for p, _ in samples(data.train)}
    assert not train & {p for p, _ in samples(data.val)}
    again = build_datasets(str(tmp_path), recipe(val_split=0.3, data_cache=cache), 16)
    assert samples(again.val) == samples(data.val)
    other = build_datasets(str(tmp_path), recipe(val_split=0.3, split_seed=1, data_cache=cache), 16)
    assert samples(other.val) != samples(data.val)


@both_paths
def test_proxy_controls_subset_classes_and_fraction(tmp_path, cache):
    root = _tree(tmp_path, classes=("a", "b", "c", "d"), per_class=10)
    data = build_datasets(str(root), recipe(data_classes=2, data_fraction=0.3, data_cache=cache), 16)
    assert data.classes == ["a", "b"] and (len(data.train), len(data.val)) == (6, 6)
    named = build_datasets(str(root), recipe(data_classes=["d", "b"], data_cache=cache), 16)
    assert named.classes == ["b", "d"]
    assert {label for _, label in samples(named.train)} == {0, 1}
    with pytest.raises(DataError, match="'zebra'"):
        build_datasets(str(root), recipe(data_classes=["zebra"], data_cache=cache), 16)
    with pytest.raises(DataError, match="data_classes=5: .* has 4 classes; choose 2..4"):
        check_data(str(root), recipe(data_classes=5, data_cache=cache), 16)
