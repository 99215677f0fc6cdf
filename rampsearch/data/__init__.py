"""Training and validation data: the built-in synthetic-freq set, or any image folder.

One module per concept:

- `synthetic`: synthetic-freq, a generated set whose label needs a low- and a high-frequency cue;
- `folders`: image folders (layout, class folders, readable files, timm's datasets and transforms);
- `splits`: the seeded per-class splits (the search split, a single folder's val split, `data_fraction`).

`build_datasets` is the one entry point training uses; `check_data` runs its checks without loading.

Every data set needs at least 2 classes (after `data_classes`): top-1 over one class is always 100%.
`check_data` runs the checks that need no decoding and no allocation (folder layout, class folders,
one image file per class by extension; synthetic class counts and memory): one directory listing per
class folder, 0.4 s for 300 folders of 1300 files (a full scan: 10 s), so a search or retraining runs
it once before its first trial.
"""
from __future__ import annotations

from pathlib import Path

from ..config import DATA_SPLITS, FINAL, SEARCH, Recipe, check_data_split
from .base import SYNTHETIC, DataError, Datasets
from .folders import check_image_folder, image_folder_datasets
from .splits import SEARCH_SPLIT_STREAM, search_split_indices
from .synthetic import check_synthetic, synthetic_datasets, synthetic_freq
from .tensors import ImageBatches, TensorImages

__all__ = ["DATA_SPLITS", "FINAL", "SEARCH", "SEARCH_SPLIT_STREAM", "SYNTHETIC", "DataError", "Datasets",
           "ImageBatches", "TensorImages", "build_datasets", "check_data", "data_identity", "image_folder_datasets",
           "search_split_indices", "synthetic_datasets", "synthetic_freq"]


def data_identity(source: str) -> str:
    """How a run's identity names its data: 'synthetic-freq', or the folder's absolute path."""
    return source if source == SYNTHETIC else str(Path(source).resolve())


def build_datasets(source: str, recipe: Recipe, img_size: int, split: str = FINAL, device: str = "cpu") -> Datasets:
    """Train and val datasets for `source`: 'synthetic-freq' or an image-folder path.

    `split` FINAL: the training data and val. SEARCH: the training data minus its search split, and
    the search split as `val` (see the module doc). `device`: where synthetic-freq is generated and kept
    (a cached folder stays in its memory map; training moves its batches to the device).
    """
    check_data_split(split)
    if source == SYNTHETIC:
        return synthetic_datasets(recipe, img_size, split, device)
    return image_folder_datasets(Path(source), recipe, img_size, split)


def check_data(source: str, recipe: Recipe, img_size: int, split: str = FINAL) -> None:
    """Raise the DataError `build_datasets` would raise for a bad folder or recipe, without loading anything.

    Image folder: the layout, the class folders (at least 2 after `data_classes`) and one file with an
    image extension in each (no file is opened: corrupt files are found by `build_datasets`).
    synthetic-freq: the class counts and whether the set fits this machine's memory. `split` SEARCH:
    synthetic-freq needs 2 training images per class (one held out, one to train on); an image folder
    whose classes all have a single training image fails in `build_datasets` (this check counts no files).
    """
    check_data_split(split)
    if source == SYNTHETIC:
        check_synthetic(recipe, img_size, split)
        return
    check_image_folder(Path(source), recipe)
