"""Image folders: layout, class folders, readable files, and the datasets timm loads from them.

`root/train/CLASS/*.png` and `root/val/CLASS/*` (also `validation/`), or `root/CLASS/*` split per
class with a seed. Classes are the train split's folder names, sorted; the same mapping labels
val, so an empty or missing class folder can never shift labels. Loading goes through timm's
`create_dataset` and `create_transform`, or at proxy resolutions through the decoded proxy cache
(rampsearch.data.cache, recipe key `data_cache`) and batch augmentation on the device. Proxy
controls (recipe keys): `data_classes` (a subset), `data_fraction` (of every class's images) and the
run's `img_size`. Files that are not images are ignored; files with an image extension that PIL
cannot open are skipped and counted in the log, or rejected by name with `strict_data: true` (which
also fully decodes every image up front; the cache decodes every image in any case).
"""
from __future__ import annotations

import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..config import FINAL, SEARCH, Recipe
from .augment import CenterCrop, Normalize, TrainAugment
from .base import ONE_CLASS, SYNTHETIC, DataError, Datasets
from .cache import DecodedFolder, cache_wanted, decoded_folder, label_array, rows_of
from .splits import fraction, search_seed, split_files
from .tensors import TensorImages

log = logging.getLogger(__name__)


def check_image_folder(root: Path, recipe: Recipe) -> None:
    """The folder checks of `rampsearch.data.check_data`: layout, class folders, one image file in each."""
    train_root, val_dir = _folder_layout(root)
    names = list(_class_files(train_root, first_only=True))
    classes = _select_classes(names, recipe.data_classes, train_root)
    if val_dir is not None and not set(classes) & set(_class_files(val_dir, set(names), first_only=True)):
        raise _no_validation(val_dir)


def image_folder_datasets(root: Path, recipe: Recipe, img_size: int, split: str = FINAL) -> Datasets:
    """Train and val datasets of an image folder (FINAL), or its training images split into search-train
    (train transform) and the search split (SEARCH: `val`, eval transform); see the module doc. Through
    the decoded proxy cache when `cache_wanted` (rampsearch.data.cache): then the sets are TensorImages,
    whose batches training augments on its device."""
    cached = cache_wanted(recipe, img_size)
    train_root, val_dir = _folder_layout(root)
    split_given = val_dir is not None
    train_files, train_cache = _scan_classes(train_root, recipe, cached, img_size)
    classes = _select_classes(list(train_files), recipe.data_classes, train_root)
    val_cache = train_cache
    if split_given:
        val_files, val_cache = _scan_classes(val_dir, recipe, cached, img_size, allowed=set(train_files))
        val_files = {c: val_files.get(c, []) for c in classes}
        train_files = {c: train_files[c] for c in classes}
    else:
        train_files, val_files = split_files(train_files, classes, recipe.val_split, recipe.split_seed)
    train_files = fraction(train_files, recipe.data_fraction, recipe.split_seed)
    val_files = fraction(val_files, recipe.data_fraction, recipe.split_seed)
    if not sum(map(len, val_files.values())):
        raise _no_validation(val_dir or root)

    class_to_idx = {c: i for i, c in enumerate(classes)}
    if cached:
        normalize = Normalize(recipe.mean, recipe.std)
        train_tf = TrainAugment(img_size, recipe.scale, recipe.ratio, recipe.hflip, recipe.color_jitter,
                                recipe.train_interpolation, normalize, recipe.reprob, recipe.remode, recipe.recount)
        eval_tf = CenterCrop(img_size, normalize)
    else:
        train_tf, eval_tf = _timm_transforms(recipe, img_size)

    def make(folder: Path, files: dict[str, list[Path]], transform, cache: DecodedFolder | None) -> Dataset:
        return (_cached_images(files, class_to_idx, transform, cache) if cache
                else _timm_dataset(folder, files, class_to_idx, transform))

    if split == SEARCH:
        train_files, held_files = split_files(train_files, classes, recipe.search_split,
                                              search_seed(recipe.split_seed), minimum=1)
        held = sum(map(len, held_files.values()))
        if not held:
            raise DataError(f"{train_root}: every selected class has a single training image, so the search "
                            "split (data_split: search) would hold none; add images")
        train = make(train_root, train_files, train_tf, train_cache)
        search = make(train_root, held_files, eval_tf, train_cache)
        log.info("image folder %s: %d classes, %d train images, of which %d are held out as the search split "
                 "(search_split %g); val is not used%s", root, len(classes), len(train) + held, held,
                 recipe.search_split, _cache_words(train_cache))
        return Datasets(train, search, len(classes), classes)
    train = make(train_root, train_files, train_tf, train_cache)
    val = make(val_dir or root, val_files, eval_tf, val_cache)
    log.info("image folder %s: %d classes, %d train and %d val images%s", root, len(classes), len(train), len(val),
             _cache_words(train_cache))
    return Datasets(train, val, len(classes), classes)


def _timm_transforms(recipe: Recipe, img_size: int):
    """timm's (train, eval) transforms of the recipe: the PIL path."""
    from timm.data import create_transform

    train_tf = create_transform(
        img_size, is_training=True, auto_augment=recipe.auto_augment, re_prob=recipe.reprob,
        re_mode=recipe.remode, re_count=recipe.recount, scale=tuple(recipe.scale), ratio=tuple(recipe.ratio),
        hflip=recipe.hflip, color_jitter=recipe.color_jitter, interpolation=recipe.train_interpolation,
        mean=tuple(recipe.mean), std=tuple(recipe.std))
    eval_tf = create_transform(img_size, is_training=False, interpolation=recipe.interpolation,
                               crop_pct=recipe.crop_pct, mean=tuple(recipe.mean), std=tuple(recipe.std))
    return train_tf, eval_tf


def _cache_words(cache: DecodedFolder | None) -> str:
    return f" (decoded proxy cache {cache.folder})" if cache else ""


def _cached_images(files: dict[str, list[Path]], class_to_idx: dict[str, int], transform,
                   cache: DecodedFolder) -> TensorImages:
    """The cached rows of exactly `files`, labelled by `class_to_idx`, transformed batch-wise by `transform`."""
    return TensorImages(cache.images, torch.from_numpy(label_array(files, class_to_idx)), transform,
                        rows=rows_of(cache, files), sources=[path for paths in files.values() for path in paths])


def _folder_layout(root: Path) -> tuple[Path, Path | None]:
    """The folder of training class folders and the val folder (None: split `root` per class)."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (or is not a folder); give an image folder "
                        f"or '{SYNTHETIC}'")
    val_dir = next((root / name for name in ("val", "validation") if (root / name).is_dir()), None)
    if (root / "train").is_dir() != (val_dir is not None):
        raise DataError(f"{root} has {'train/ but no val/' if val_dir is None else 'val/ but no train/'}; "
                        "give both, or one folder of class folders to split")
    return (root if val_dir is None else root / "train"), val_dir


def _no_validation(path: Path) -> DataError:
    return DataError(f"{path}: no validation images for the selected classes")


def _timm_dataset(root: Path, files: dict[str, list[Path]], class_to_idx: dict[str, int], transform) -> Dataset:
    """timm's folder dataset over exactly the checked `files` (timm's own scan would keep corrupt files)."""
    from timm.data import create_dataset

    dataset = create_dataset("", root=str(root), split="train", search_split=False,
                             class_map=class_to_idx, transform=transform)
    dataset.reader.samples = [(str(p), class_to_idx[c]) for c, paths in files.items() for p in paths]
    return dataset


def _image_ok(path: Path, full: bool) -> bool:
    try:
        with Image.open(path) as image:
            if full:
                image.load()  # decodes every pixel: catches truncated files too
        return True
    except Exception:  # PIL raises many types for bad files; all mean "not a readable image"
        return False


def _class_files(split_root: Path, allowed: set[str] | None = None,
                 first_only: bool = False) -> dict[str, list[Path]]:
    """Files with an image extension of every class folder under `split_root` (none is opened), by class
    in natural order; errors name the path. `first_only`: only the first file found in each class,
    which is all a check for empty classes needs (one directory listing per class, not all files)."""
    from timm.data.readers.img_extensions import get_img_extensions
    from timm.utils.misc import natural_key

    extensions = get_img_extensions(as_set=True)
    class_dirs = sorted((d for d in split_root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: natural_key(d.name))  # hidden folders (.ipynb_checkpoints) are no classes
    if not class_dirs:
        raise DataError(f"{split_root} has no class folders; expected {split_root}/CLASS_NAME/IMAGE files")
    files: dict[str, list[Path]] = {}
    for d in class_dirs:
        if allowed is not None and d.name not in allowed:
            raise DataError(f"{d}: class {d.name!r} is not among the train classes; labels would not match")
        found = (Path(r) / f for r, _, fs in os.walk(d, followlinks=True) for f in fs
                 if os.path.splitext(f)[1].lower() in extensions)  # lazy: first_only stops early
        files[d.name] = (list(itertools.islice(found, 1)) if first_only
                         else sorted(found, key=lambda p: natural_key(str(p))))
        if not files[d.name]:
            raise DataError(f"class folder {d} holds no image files ({', '.join(sorted(extensions))})")
    return files


def _scan_classes(split_root: Path, recipe: Recipe, cached: bool, img_size: int,
                  allowed: set[str] | None = None) -> tuple[dict[str, list[Path]], DecodedFolder | None]:
    """Readable image files of every class folder under `split_root`, sorted, and the decoded cache of them
    when `cached` (which decodes every file; else PIL opens each, and decodes it under `strict_data`);
    errors name the path."""
    candidates = _class_files(split_root, allowed)
    every = [p for paths in candidates.values() for p in paths]
    cache = None
    if cached:
        cache = decoded_folder(split_root, candidates, img_size, recipe.crop_pct, recipe.interpolation)
        ok = {p: cache.readable(p) for p in every}
    else:
        with ThreadPoolExecutor(max_workers=16) as pool:  # file opening is I/O-bound
            ok = dict(zip(every, pool.map(lambda p: _image_ok(p, full=recipe.strict_data), every)))
    bad = [p for p in every if not ok[p]]
    if bad and recipe.strict_data:
        raise DataError(f"{bad[0]} is not a readable image ({len(bad)} such file(s) under {split_root}); "
                        "remove them, or set strict_data: false to skip them")
    if bad:
        log.warning("%s: skipped %d unreadable image file(s), e.g. %s", split_root, len(bad), bad[0])
    files = {c: [p for p in paths if ok[p]] for c, paths in candidates.items()}
    for c, paths in files.items():
        if not paths:
            raise DataError(f"class folder {split_root / c}: none of its {len(candidates[c])} image files "
                            "can be read")
    return files, cache


def _select_classes(names: list[str], wanted: int | list[str] | None, root: Path) -> list[str]:
    """The classes `data_classes` (`wanted`) selects of `root`'s class folders `names`, in their order:
    at least 2, or a DataError naming the folder or the key."""
    if len(names) < 2:
        raise DataError(f"{root} has a single class folder ({names[0]!r}); {ONE_CLASS}")
    if wanted is None:
        return names
    if isinstance(wanted, int):
        if wanted == 1:
            raise DataError(f"data_classes: 1 selects one class of {root}; {ONE_CLASS}")
        if not 2 <= wanted <= len(names):
            raise DataError(f"data_classes={wanted}: {root} has {len(names)} classes; choose 2..{len(names)}")
        return names[:wanted]
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise DataError(f"data_classes: {unknown} are not class folders of {root}")
    if len(set(wanted)) < 2:
        raise DataError(f"data_classes: {wanted} names {'one class' if wanted else 'no class'} of {root}; "
                        f"{ONE_CLASS}")
    return [c for c in names if c in wanted]
