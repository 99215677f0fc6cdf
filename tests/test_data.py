"""Data: synthetic-freq determinism and shape; image folders with bad data (each error names its path)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rampsearch.config import ConfigError, load_recipe
from rampsearch.data import DataError, build_datasets, synthetic_freq


def recipe(**overrides):
    return load_recipe("proxy", overrides)


# -- synthetic-freq -----------------------------------------------------------------------------------

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


@pytest.mark.parametrize("overrides", [{"synthetic_low_classes": 9}, {"synthetic_high_classes": 0}])
def test_synthetic_rejects_bad_class_counts(overrides):
    with pytest.raises(DataError, match="synthetic_"):
        build_datasets("synthetic-freq", recipe(**overrides), 32)


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


def test_image_folder_labels_follow_train_class_folders(tmp_path):
    root = _tree(tmp_path)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")  # ignored: no image extension
    data = build_datasets(str(root), recipe(), 16)
    assert data.classes == ["cat", "dog", "emu"] and data.num_classes == 3
    assert (len(data.train), len(data.val)) == (12, 12)
    for path, label in data.val.reader.samples:
        assert data.classes[label] == Path(path).parent.name
    image, label = data.val[5]
    assert image.shape == (3, 16, 16) and label == 1


def test_corrupt_file_is_skipped_and_counted(tmp_path, caplog):
    root = _tree(tmp_path)
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG this is not really a png")
    with caplog.at_level(logging.WARNING, logger="rampsearch.data"):
        data = build_datasets(str(root), recipe(), 16)
    assert len(data.train) == 12
    assert "skipped 1 unreadable image file(s)" in caplog.text and "broken.png" in caplog.text


def test_corrupt_file_is_an_error_when_strict(tmp_path):
    root = _tree(tmp_path)
    (root / "train" / "dog" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="broken.png"):
        build_datasets(str(root), recipe(strict_data=True), 16)


def test_truncated_png_is_caught_by_strict_decoding(tmp_path):
    root = _tree(tmp_path)
    good = (root / "train" / "cat" / "0.png").read_bytes()
    (root / "train" / "cat" / "cut.png").write_bytes(good[: len(good) // 2])  # header intact, pixels missing
    with pytest.raises(DataError, match="cut.png"):
        build_datasets(str(root), recipe(strict_data=True), 16)


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


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "has no class folders"),
    (lambda root: (root / "train" / "a").mkdir(parents=True), "has train/ but no val/"),
    (lambda root: _tree(root) and (root / "val" / "yak").mkdir(), "'yak' is not among the train classes"),
])
def test_bad_folders_give_errors_naming_the_path(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=message) as err:
        build_datasets(str(root), recipe(), 16)
    assert str(root) in str(err.value)


def test_one_folder_is_split_per_class_with_a_seed(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            _png(tmp_path / c / f"{i}.png", i)
    data = build_datasets(str(tmp_path), recipe(val_split=0.3), 16)
    assert (len(data.train), len(data.val)) == (14, 6)
    train = {p for p, _ in data.train.reader.samples}
    assert not train & {p for p, _ in data.val.reader.samples}
    again = build_datasets(str(tmp_path), recipe(val_split=0.3), 16)
    assert again.val.reader.samples == data.val.reader.samples
    other = build_datasets(str(tmp_path), recipe(val_split=0.3, split_seed=1), 16)
    assert other.val.reader.samples != data.val.reader.samples


def test_proxy_controls_subset_classes_and_fraction(tmp_path):
    root = _tree(tmp_path, classes=("a", "b", "c", "d"), per_class=10)
    data = build_datasets(str(root), recipe(data_classes=2, data_fraction=0.3), 16)
    assert data.classes == ["a", "b"] and (len(data.train), len(data.val)) == (6, 6)
    named = build_datasets(str(root), recipe(data_classes=["d", "b"]), 16)
    assert named.classes == ["b", "d"]
    assert {label for _, label in named.train.reader.samples} == {0, 1}
    with pytest.raises(DataError, match="'zebra'"):
        build_datasets(str(root), recipe(data_classes=["zebra"]), 16)
