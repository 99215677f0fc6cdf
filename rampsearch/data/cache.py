"""The decoded proxy cache: an image folder decoded once, at a proxy resolution, into a uint8 memory map.

Why: a proxy trial at 64-128 px on a GPU trains thousands of images a second, while timm's folder path
decodes a full-size JPEG with PIL for every image of every epoch of every trial. The cache decodes each
file once per search (per machine), and training then reads rows of a memory map and augments them
on the device (rampsearch.data.augment, rampsearch.data.tensors).

What is stored, per class-folder root (`train/`, `val/`, or a folder to split) and stored size S:
every file with an image extension, resized as timm's eval transform resizes it (shorter side to
S = floor(img_size / crop_pct) with the recipe's `interpolation`) and cropped to an S x S square
around its centre (placed so that the square's centre img_size crop is exactly timm's), as rows of `images.u8` (N x S x S x 3, uint8, raw: `np.memmap` opens it with no parse);
`manifest.json` lists the class names and every source file (path under the root, bytes,
modification time in ns, its row or -1 if it could not be decoded, its class). So the eval crop
(the centre img_size square) is timm's eval transform, and the training crop is drawn from that S x S
square rather than from the whole image: for a 4:3 photo the outer eighths of its width are never
seen. JPEGs are decoded at a reduced DCT scale (PIL's `draft`) no smaller than S: much faster, and the
resize that follows is a downscale as before.

Where: `$RAMPSEARCH_CACHE_DIR`, else `$XDG_CACHE_HOME/rampsearch/proxy`, else
`~/.cache/rampsearch/proxy`, one folder per (root, img_size, S, interpolation), named after the root and img_size. Every
trial, worker and process of a machine shares it: one process builds it under an exclusive lock on
`<folder>.lock` into a temporary folder that is renamed into place when complete, so no process ever
reads a half-built cache, and the others wait for it and then use it. It is rebuilt when the sources
change (a file added, removed, resized or touched: the manifest no longer matches the listing) or when
it is damaged (a manifest that does not parse, an image file of the wrong size). Delete the folder to
reclaim the space; `data_cache: off` (recipe key, or `--set data_cache=off`) bypasses it.

Files PIL cannot decode are skipped and counted, or refused by name under `strict_data`, as on the
PIL path (rampsearch.data.folders), with one difference: every file is decoded fully here, so a
truncated JPEG is found too.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..config import Recipe
from .base import DataError

log = logging.getLogger(__name__)

CACHE_DIR_VARIABLE = "RAMPSEARCH_CACHE_DIR"
# Bumped when what a row holds changes: an older cache is then rebuilt, never misread.
CACHE_FORMAT = 1
# `data_cache: auto` caches at proxy resolutions only: at 224 px a cache of ImageNet's train split would
# take about 240 GB, and there the paper recipe's timm path (RandAugment on PIL images) is the right tool.
AUTO_MAX_IMG_SIZE = 128
IMAGES, MANIFEST = "images.u8", "manifest.json"
UNREADABLE = -1  # a file's row in the manifest when PIL could not decode it
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class DecodedFolder:
    """A built cache: the images (N x S x S x 3 uint8, memory-mapped) and each decodable file's row."""

    folder: Path
    images: np.ndarray
    rows: dict[Path, int]  # source file -> row; files that could not be decoded are absent

    def readable(self, path: Path) -> bool:
        return path in self.rows


def cache_wanted(recipe: Recipe, img_size: int) -> bool:
    """Whether an image folder at `img_size` goes through the cache under the recipe's `data_cache`.

    auto: when img_size <= AUTO_MAX_IMG_SIZE and the recipe has no `auto_augment` (which only timm's PIL
    path does); on: always, and a recipe with `auto_augment` is refused; off: never.
    """
    if recipe.data_cache == "off":
        return False
    if recipe.data_cache == "on" and recipe.auto_augment:
        raise DataError(f"data_cache: on cannot apply auto_augment {recipe.auto_augment!r} (RandAugment runs on "
                        "PIL images only); set auto_augment: null, or data_cache: auto or off")
    return recipe.data_cache == "on" or (not recipe.auto_augment and img_size <= AUTO_MAX_IMG_SIZE)


def stored_size(img_size: int, crop_pct: float) -> int:
    """S, the side of a stored image: timm's eval resize, floor(img_size / crop_pct)."""
    return max(img_size, math.floor(img_size / crop_pct))


def cache_root() -> Path:
    """The folder that holds every proxy cache of this machine (module doc)."""
    if os.environ.get(CACHE_DIR_VARIABLE):
        return Path(os.environ[CACHE_DIR_VARIABLE])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "rampsearch" / "proxy"


def decoded_folder(root: Path, files: dict[str, list[Path]], img_size: int, crop_pct: float,
                   interpolation: str) -> DecodedFolder:
    """The cache of `files` (class -> image files under the class-folder root `root`) for `img_size`:
    opened if it is current, else built first (under the lock; see the module doc)."""
    size = stored_size(img_size, crop_pct)
    key = f"{root.resolve()}|{img_size}|{size}|{interpolation}|{CACHE_FORMAT}"
    folder = cache_root() / f"{root.resolve().name}-{img_size}px-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    listing = _listing(root, files)
    opened = _open(folder, root, listing)
    if opened is None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _locked(folder.with_name(folder.name + ".lock")):
            opened = _open(folder, root, listing)  # another process may have built it while this one waited
            if opened is None:
                _build(folder, root, listing, list(files), img_size, size, interpolation)
                opened = _open(folder, root, listing)
    if opened is None:
        raise DataError(f"the proxy cache {folder} could not be read back after building it; delete it, or set "
                        "data_cache: off")
    return opened


def _listing(root: Path, files: dict[str, list[Path]]) -> list[list]:
    """[path under root, bytes, mtime ns, class] of every file, in class order: what the manifest must match."""
    rows = []
    for label, paths in enumerate(files.values()):
        for path in paths:
            stat = path.stat()
            rows.append([str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns, label])
    return rows


def _open(folder: Path, root: Path, listing: list[list]) -> DecodedFolder | None:
    """The cache in `folder` if it exists, is intact and matches `listing`; None otherwise (logged why)."""
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():
        return None
    try:
        manifest = json.loads(manifest_file.read_text())
        entries, size = manifest["files"], manifest["size"]
        current = manifest["format"] == CACHE_FORMAT and [e[:3] + e[4:] for e in entries] == listing
        count = sum(e[3] != UNREADABLE for e in entries)
        intact = (folder / IMAGES).stat().st_size == count * size * size * 3
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("proxy cache %s is damaged (%s); rebuilding it", folder, exc)
        return None
    if not current:
        log.info("proxy cache %s does not match its image folder (files added, removed or changed); rebuilding it",
                 folder)
        return None
    if not intact:
        log.warning("proxy cache %s is damaged (%s has the wrong size); rebuilding it", folder, IMAGES)
        return None
    images = (np.memmap(folder / IMAGES, np.uint8, "r", shape=(count, size, size, 3)) if count
              else np.zeros((0, size, size, 3), np.uint8))
    return DecodedFolder(folder, images, {root / e[0]: e[3] for e in entries if e[3] != UNREADABLE})


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(folder: Path, root: Path, listing: list[list], classes: list[str], img_size: int, size: int,
           interpolation: str) -> None:
    """Decode every file of `listing` into a temporary folder beside `folder`, then swap it into place."""
    started = time.perf_counter()
    log.info("building the proxy cache of %s: %d images at %d px into %s", root, len(listing), size, folder)
    temporary = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    resample = _RESAMPLE.get(interpolation, Image.Resampling.BILINEAR)
    entries, row = [], 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, (temporary / IMAGES).open("wb") as out:
        decoded = pool.map(lambda entry: _decode(root / entry[0], img_size, size, resample), listing)  # no GIL in PIL
        for (path, size_bytes, mtime, label), image in zip(listing, decoded):
            entries.append([path, size_bytes, mtime, UNREADABLE if image is None else row, label])
            if image is not None:
                out.write(image.tobytes())
                row += 1
    manifest = {"format": CACHE_FORMAT, "root": str(root.resolve()), "size": size, "interpolation": interpolation,
                "classes": classes, "files": entries}
    (temporary / MANIFEST).write_text(json.dumps(manifest))
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)  # processes that mapped it keep their open files
    temporary.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    log.info("proxy cache of %s built in %.1f s (%d images, %d not decodable)", root, time.perf_counter() - started,
             row, len(listing) - row)


def _decode(path: Path, img_size: int, size: int, resample: Image.Resampling) -> np.ndarray | None:
    """The file as a size x size x 3 uint8 array: shorter side resized to `size` (torchvision's Resize
    rounding), then the size x size square whose centre img_size square is torchvision's CenterCrop of
    img_size (the two crops' roundings compose exactly); None if PIL cannot decode it."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale >= size
            image = image.convert("RGB")
    except Exception:  # PIL raises many types for bad files; all mean "not a readable image"
        return None
    width, height = image.size
    if width <= height:
        shape = (size, int(size * height / width))
    else:
        shape = (int(size * width / height), size)
    image = image.resize(shape, resample)
    inner = int(round((size - img_size) / 2.0))  # where CenterCrop(img_size) of the stored square starts
    left = min(max(int(round((shape[0] - img_size) / 2.0)) - inner, 0), shape[0] - size)
    top = min(max(int(round((shape[1] - img_size) / 2.0)) - inner, 0), shape[1] - size)
    return np.asarray(image.crop((left, top, left + size, top + size)))


def rows_of(decoded: DecodedFolder, files: dict[str, list[Path]]) -> np.ndarray:
    """The cache rows of `files`, in class order then file order (how labels are laid out)."""
    return np.array([decoded.rows[path] for paths in files.values() for path in paths], dtype=np.int64)


def label_array(files: dict[str, list[Path]], class_to_idx: dict[str, int]) -> np.ndarray:
    """The labels of `files`, in the order of `rows_of`."""
    return np.array([class_to_idx[c] for c, paths in files.items() for _ in paths], dtype=np.int64)
