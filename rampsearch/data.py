"""Training and validation data: the built-in synthetic-freq set, or any image folder.

synthetic-freq
--------------
A procedurally generated classification set whose label needs both a low-frequency cue (the global
layout of a few blobs) and a high-frequency cue (the orientation of a fine grating inside them):
label = layout * n_high + orientation. Either cue alone leaves n_high (or n_low) classes to guess
between. How one image is made (sizes are fractions of the image side unless given in pixels):

1. Background: a random colour plus a linear gradient in a random direction, random amplitude.
2. Layout (low-frequency class): 2-4 soft-edged disks at the template positions of the class
   (pairs horizontal, vertical, diagonal, anti-diagonal; two triangles; a square; a row of three),
   scaled by a random spread, rotated by up to +-10 degrees and shifted by up to +-1/8 image.
3. Texture (high-frequency class): all disks carry a sinusoidal grating of one of n_high
   orientations (evenly spaced over 180 degrees, +-7.5 degrees of jitter) with a period of 3-5
   pixels, random phase, on a random colour, at a random contrast.
4. Gaussian pixel noise of random strength.

With `synthetic_texture: dot-lattice` step 3 changes: the disks are plain (a little lighter or
darker than the ground), and the high-frequency class is the orientation of a lattice of one-pixel
dots over the whole image (5-6.5 px apart along the class orientation, rows 9-12 px apart, each dot
jittered by up to +-0.5 px, 15% left out, dark dots on a light ground or light on dark, slightly
tinted), with weaker pixel noise over everything. No single dot has an orientation: it lies only in
how dots line up across several of the model's 4-px tokens. It is much harder than the grating:
see BENCHMARKS.md for which ramps learned it in 8 and 16 epochs.

All random values of image i come from numpy's generator seeded with (seed, split, i), so an image
depends only on (seed, split, index, resolution, class counts, texture) and not on how many are made.
Labels cycle through the classes (balanced). The set is generated once per process and cached
in memory as uint8 (a few thousand 64x64 images per second).

Its labels are not invariant to flips, crops or rotations (they change orientations and
layouts), so synthetic-freq uses none of the recipe's image transforms; batch-level mixup/cutmix
and label smoothing still apply.

Image folders
-------------
`root/train/CLASS/*.png` and `root/val/CLASS/*` (also `validation/`), or `root/CLASS/*` split per
class with a seed. Classes are the train split's folder names, sorted; the same mapping labels
val, so an empty or missing class folder can never shift labels. Loading goes through timm's
`create_dataset` and `create_transform`. Proxy controls (recipe keys): `data_classes` (a subset),
`data_fraction` (of every class's images) and the run's `img_size`. Files that are not images are
ignored; files with an image extension that PIL cannot open are skipped and counted in the log,
or rejected by name with `strict_data: true` (which also fully decodes every image up front).
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .config import Recipe
from .errors import UserError

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic-freq"

# Blob centres of each low-frequency (layout) class, in units of the random spread, before rotation
# and shift: pairs horizontal, vertical, diagonal, anti-diagonal; two triangles; a square; a row of 3.
LAYOUTS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((-1, 0), (1, 0)),
    ((0, -1), (0, 1)),
    ((-0.7, -0.7), (0.7, 0.7)),
    ((-0.7, 0.7), (0.7, -0.7)),
    ((-1, 0.6), (0, -0.9), (1, 0.6)),
    ((-1, -0.6), (0, 0.9), (1, -0.6)),
    ((-0.8, -0.8), (0.8, -0.8), (-0.8, 0.8), (0.8, 0.8)),
    ((-1.2, 0), (0, 0), (1.2, 0)),
)
MAX_TEXTURES = 8  # orientations closer than 180/8 degrees drown in the orientation jitter

# Nuisance ranges (fractions of the image side unless noted), uniform in [low, high].
SHIFT = 0.25  # offset of the layout's centre, either axis, +-SHIFT/2
SPREAD = (0.16, 0.24)  # distance of the blobs from the layout's centre, in template units
ROTATION_DEG = 20.0  # layout rotation, +-ROTATION_DEG/2
RADIUS = (0.08, 0.13)  # blob radius
EDGE_PX = 1.5  # softness of a blob's edge, pixels
PERIOD_PX = (3.0, 5.0)  # grating period, pixels: fine detail at any resolution
ORIENTATION_JITTER_DEG = 15.0  # +-half of it around the class orientation
CONTRAST = (0.1, 0.45)  # grating amplitude on the blob colour
GRADIENT = 0.4  # background gradient amplitude across the image, at most
NOISE = (0.03, 0.18)  # pixel noise standard deviation
_NUM_DRAWS = 18  # uniform draws per image, in the order used by _render
# dot-lattice texture (pixels)
LATTICE_SPACING_PX = (5.0, 6.5)  # dot spacing along the class orientation
LATTICE_GAP_PX = (9.0, 12.0)  # spacing of the rows
LATTICE_JITTER_PX = 1.0  # each dot moves up to +-half of it, either axis
LATTICE_DROP = 0.15  # share of dots left out
LATTICE_GAIN = 1.6  # a bilinearly splatted dot's peak is below 1; this brings most dots to full ink
LATTICE_INK = (0.5, 1.0)  # dot opacity
LATTICE_TINT = 0.3  # dots are black or white, each channel moved by up to +-half of it
LATTICE_DISK_CONTRAST = (0.15, 0.5)  # the disks' offset from the ground colour
LATTICE_NOISE = (0.02, 0.1)  # lower than NOISE: the dots are a pixel or two wide
# per image: lattice origin (2), disk sign and contrast (2), ink tint (3); then x, y jitter and drop per dot
_LATTICE_IMAGE_DRAWS = 7


class DataError(UserError):
    """Unusable data; the message names the path and what is wrong with it."""


@dataclass
class Datasets:
    train: Dataset
    val: Dataset
    num_classes: int
    classes: list[str]


def build_datasets(source: str, recipe: Recipe, img_size: int) -> Datasets:
    """Train and val datasets for `source`: 'synthetic-freq' or an image-folder path."""
    if source == SYNTHETIC:
        return synthetic_datasets(recipe, img_size)
    return image_folder_datasets(Path(source), recipe, img_size)


# -- synthetic-freq ----------------------------------------------------------------------------------

def synthetic_datasets(recipe: Recipe, img_size: int) -> Datasets:
    low, high = recipe.synthetic_low_classes, recipe.synthetic_high_classes
    if not (1 <= low <= len(LAYOUTS) and 1 <= high <= MAX_TEXTURES and low * high >= 2):
        raise DataError(f"synthetic-freq: synthetic_low_classes must be in 1..{len(LAYOUTS)} and "
                        f"synthetic_high_classes in 1..{MAX_TEXTURES} (at least 2 classes in all); "
                        f"got {low} and {high}")
    if img_size < 16:
        raise DataError(f"synthetic-freq: img_size {img_size} is too small for its textures; use at least 16")
    classes = [f"layout{i}_orientation{j}" for i in range(low) for j in range(high)]
    per_split = {"train": recipe.synthetic_train_per_class, "val": recipe.synthetic_val_per_class}
    made = {split: SyntheticImages(*synthetic_freq(low, high, count * len(classes), img_size, recipe.synthetic_seed,
                                                   split, recipe.synthetic_texture), recipe.mean, recipe.std)
            for split, count in per_split.items()}
    return Datasets(made["train"], made["val"], len(classes), classes)


@lru_cache(maxsize=4)  # trials in one process share the set
def synthetic_freq(low_classes: int, high_classes: int, count: int, img_size: int, seed: int,
                   split: str, texture: str = "grating") -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images (uint8, N x 3 x img_size x img_size) and labels of one split; see the module doc."""
    split_id = {"train": 0, "val": 1}[split]
    labels = np.arange(count) % (low_classes * high_classes)
    lattice = texture == "dot-lattice"
    extra = _LATTICE_IMAGE_DRAWS + 3 * _lattice_points(img_size) if lattice else 0
    draws = np.empty((count, _NUM_DRAWS + extra), np.float32)
    noise = np.empty((count, 3, img_size, img_size), np.float32)
    for i in range(count):
        rng = np.random.default_rng([seed, split_id, i])
        draws[i, :_NUM_DRAWS] = rng.random(_NUM_DRAWS, dtype=np.float32)
        noise[i] = rng.standard_normal((3, img_size, img_size), dtype=np.float32)
        draws[i, _NUM_DRAWS:] = rng.random(extra, dtype=np.float32)  # after the grating's draws: they stay put
    images = torch.empty((count, 3, img_size, img_size), dtype=torch.uint8)
    chunk = 512  # bounds the N x blobs x H x W temporaries
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        images[part] = _render(torch.from_numpy(draws[part]), torch.from_numpy(labels[part]),
                               torch.from_numpy(noise[part]), high_classes, img_size, lattice)
    return images, torch.from_numpy(labels)


def _render(u: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, high_classes: int,
            size: int, lattice: bool) -> torch.Tensor:
    """Images from per-image uniform draws `u` (N x draws) and unit noise (N x 3 x H x W, reused)."""
    n = len(u)
    draw = partial(_uniform, u)
    layout, orientation = labels // high_classes, labels % high_classes
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    y, x = axis.view(1, 1, size, 1), axis.view(1, 1, 1, size)

    direction = draw(3) * 2 * math.pi
    gradient = (direction.cos() * x + direction.sin() * y) * draw(4, (0, GRADIENT))  # N x 1 x H x W
    background = 0.1 + 0.8 * u[:, 0:3].view(n, 3, 1, 1)
    mask = _layout_mask(u, layout, x, y, size)
    theta = orientation.view(n, 1, 1, 1) * (math.pi / high_classes) + \
        (draw(10) - 0.5) * math.radians(ORIENTATION_JITTER_DEG)
    if lattice:
        # plain disks a little lighter or darker than the ground, dots over everything, noise over that
        extra = u[:, _NUM_DRAWS:]  # see synthetic_freq
        sign = torch.where(extra[:, 2] < 0.5, -1.0, 1.0).view(n, 1, 1, 1)
        strength = draw(_NUM_DRAWS + 3, LATTICE_DISK_CONTRAST)
        image = (background + gradient).addcmul_(mask, sign * strength * (0.3 + 0.7 * u[:, 14:17].view(n, 3, 1, 1)))
        spacing, gap = draw(11, LATTICE_SPACING_PX).view(n, 1), draw(12, LATTICE_GAP_PX).view(n, 1)
        dots = _lattice_dots(theta.view(n, 1), spacing, gap, extra[:, 0:2], extra[:, _LATTICE_IMAGE_DRAWS:], size)
        dots.mul_(draw(13, LATTICE_INK))
        # light dots on a dark ground, dark on light, slightly tinted
        ink = (background.mean(1, keepdim=True) < 0.5).float() + (extra[:, 4:7].view(n, 3, 1, 1) - 0.5) * LATTICE_TINT
        image.mul_(1 - dots).addcmul_(dots, ink).add_(noise.mul_(draw(17, LATTICE_NOISE)))
    else:
        image = noise.mul_(draw(17, NOISE)).add_(background).add_(gradient)
        along = theta.cos() * x + theta.sin() * y
        grating = torch.sin(along * (2 * math.pi * size) / draw(11, PERIOD_PX) + draw(12) * 2 * math.pi)
        colour = 0.1 + 0.8 * u[:, 14:17].view(n, 3, 1, 1)
        # inside a blob: its colour plus the grating, without the background's gradient
        image.addcmul_(mask, (colour - background - gradient).add_(grating.mul_(draw(13, CONTRAST))))
    return image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)


def _uniform(u: torch.Tensor, column: int, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Column `column` of the per-image draws, mapped to [low, high], as N x 1 x 1 x 1."""
    return (bounds[0] + u[:, column] * (bounds[1] - bounds[0])).view(-1, 1, 1, 1)


def _layout_mask(u: torch.Tensor, layout: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 size: int) -> torch.Tensor:
    """N x 1 x H x W soft mask of each image's blobs: its layout class's template, spread, rotated, shifted."""
    n = len(u)
    slots = max(len(t) for t in LAYOUTS)  # blob slots; a layout with fewer blobs leaves some empty
    template = torch.zeros(len(LAYOUTS), slots, 2)
    present = torch.zeros(len(LAYOUTS), slots)
    for k, points in enumerate(LAYOUTS):
        template[k, :len(points)] = torch.tensor(points)
        present[k, :len(points)] = 1
    angle = (_uniform(u, 8) - 0.5) * math.radians(ROTATION_DEG)
    spread, radius = _uniform(u, 7, SPREAD), _uniform(u, 9, RADIUS)
    cx, cy = (_uniform(u, 5) - 0.5) * SHIFT, (_uniform(u, 6) - 0.5) * SHIFT
    mask = torch.zeros(n, 1, size, size)
    for slot in range(slots):
        ox, oy = template[layout, slot, 0].view(n, 1, 1, 1), template[layout, slot, 1].view(n, 1, 1, 1)
        bx = cx + (ox * angle.cos() - oy * angle.sin()) * spread
        by = cy + (ox * angle.sin() + oy * angle.cos()) * spread
        disk = ((x - bx) ** 2 + (y - by) ** 2).sqrt_().sub_(radius).mul_(-size / EDGE_PX).sigmoid_()
        mask = torch.maximum(mask, disk.mul_(present[layout, slot].view(n, 1, 1, 1)))
    return mask


def _lattice_extent(size: int) -> tuple[int, int]:
    """Dots along and rows across (each way from the centre) that cover a size x size image at any angle."""
    return math.ceil(0.75 * size / LATTICE_SPACING_PX[0]) + 1, math.ceil(0.75 * size / LATTICE_GAP_PX[0]) + 1


def _lattice_points(size: int) -> int:
    along, across = _lattice_extent(size)
    return (2 * along + 1) * (2 * across + 1)


def _lattice_dots(theta: torch.Tensor, spacing: torch.Tensor, gap: torch.Tensor, origin: torch.Tensor,
                  per_dot: torch.Tensor, size: int) -> torch.Tensor:
    """N x 1 x H x W ink (0..1) of a jittered dot lattice: dots `spacing` px apart along theta, rows `gap` apart.

    `origin` (N x 2) shifts the lattice by a fraction of a cell; `per_dot` (N x dots*3) holds each
    dot's x and y jitter and its drop draw.
    """
    n = len(theta)
    along, across = _lattice_extent(size)
    i, j = torch.meshgrid(torch.arange(-along, along + 1.0), torch.arange(-across, across + 1.0), indexing="ij")
    per_dot = per_dot.view(n, -1, 3)
    a = (i.reshape(1, -1) + origin[:, 0:1] - 0.5) * spacing
    b = (j.reshape(1, -1) + origin[:, 1:2] - 0.5) * gap
    xs = size / 2 + a * theta.cos() - b * theta.sin() + (per_dot[..., 0] - 0.5) * LATTICE_JITTER_PX
    ys = size / 2 + a * theta.sin() + b * theta.cos() + (per_dot[..., 1] - 0.5) * LATTICE_JITTER_PX
    weight = (per_dot[..., 2] >= LATTICE_DROP).float()
    canvas = torch.zeros(n, size * size)
    x0, y0 = xs.floor(), ys.floor()
    for dx in (0, 1):  # bilinear splat: sub-pixel positions, so the lattice's angle is not snapped to the grid
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            share = (1 - (xs - xi).abs()) * (1 - (ys - yi).abs()) * weight
            inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
            index = (yi.clamp(0, size - 1) * size + xi.clamp(0, size - 1)).long()
            canvas.scatter_add_(1, index, share * inside)
    return canvas.mul_(LATTICE_GAIN).clamp_(0, 1).view(n, 1, size, size)


class SyntheticImages(Dataset):
    """In-memory uint8 images, returned as normalized float tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean).view(3, 1, 1) * 255
        self.std = torch.tensor(std).view(3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return (self.images[index].float() - self.mean) / self.std, int(self.labels[index])


# -- image folders -----------------------------------------------------------------------------------

def image_folder_datasets(root: Path, recipe: Recipe, img_size: int) -> Datasets:
    from timm.data import create_transform

    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (or is not a folder); give an image folder "
                        f"or '{SYNTHETIC}'")
    val_dir = next((root / name for name in ("val", "validation") if (root / name).is_dir()), None)
    if (root / "train").is_dir() != (val_dir is not None):
        raise DataError(f"{root} has {'train/ but no val/' if val_dir is None else 'val/ but no train/'}; "
                        "give both, or one folder of class folders to split")
    split_given = val_dir is not None
    train_root = root / "train" if split_given else root
    train_files = _scan_classes(train_root, recipe.strict_data)
    classes = _select_classes(train_files, recipe.data_classes, train_root)
    if split_given:
        val_files = _scan_classes(val_dir, recipe.strict_data, allowed=set(train_files))
        val_files = {c: val_files.get(c, []) for c in classes}
        train_files = {c: train_files[c] for c in classes}
    else:
        train_files, val_files = _split(train_files, classes, recipe.val_split, recipe.split_seed)
    train_files = _fraction(train_files, recipe.data_fraction, recipe.split_seed)
    val_files = _fraction(val_files, recipe.data_fraction, recipe.split_seed)
    if not sum(map(len, val_files.values())):
        raise DataError(f"{val_dir or root}: no validation images for the selected classes")

    class_to_idx = {c: i for i, c in enumerate(classes)}
    train_tf = create_transform(
        img_size, is_training=True, auto_augment=recipe.auto_augment, re_prob=recipe.reprob,
        re_mode=recipe.remode, re_count=recipe.recount, scale=tuple(recipe.scale), ratio=tuple(recipe.ratio),
        hflip=recipe.hflip, color_jitter=recipe.color_jitter, interpolation=recipe.train_interpolation,
        mean=tuple(recipe.mean), std=tuple(recipe.std))
    eval_tf = create_transform(img_size, is_training=False, interpolation=recipe.interpolation,
                               crop_pct=recipe.crop_pct, mean=tuple(recipe.mean), std=tuple(recipe.std))
    train = _timm_dataset(train_root, train_files, class_to_idx, train_tf)
    val = _timm_dataset(val_dir or root, val_files, class_to_idx, eval_tf)
    log.info("image folder %s: %d classes, %d train and %d val images", root, len(classes), len(train), len(val))
    return Datasets(train, val, len(classes), classes)


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


def _scan_classes(split_root: Path, strict: bool, allowed: set[str] | None = None) -> dict[str, list[Path]]:
    """Readable image files of every class folder under `split_root`, sorted; errors name the path."""
    from timm.data.readers.img_extensions import get_img_extensions
    from timm.utils.misc import natural_key

    extensions = get_img_extensions(as_set=True)
    class_dirs = sorted((d for d in split_root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: natural_key(d.name))  # hidden folders (.ipynb_checkpoints) are no classes
    if not class_dirs:
        raise DataError(f"{split_root} has no class folders; expected {split_root}/CLASS_NAME/IMAGE files")
    candidates: dict[str, list[Path]] = {}
    for d in class_dirs:
        if allowed is not None and d.name not in allowed:
            raise DataError(f"{d}: class {d.name!r} is not among the train classes; labels would not match")
        candidates[d.name] = sorted((Path(r) / f for r, _, fs in os.walk(d, followlinks=True) for f in fs
                                     if os.path.splitext(f)[1].lower() in extensions),
                                    key=lambda p: natural_key(str(p)))
        if not candidates[d.name]:
            raise DataError(f"class folder {d} holds no image files ({', '.join(sorted(extensions))})")
    every = [p for paths in candidates.values() for p in paths]
    with ThreadPoolExecutor(max_workers=16) as pool:  # file opening is I/O-bound
        ok = dict(zip(every, pool.map(lambda p: _image_ok(p, full=strict), every)))
    bad = [p for p in every if not ok[p]]
    if bad and strict:
        raise DataError(f"{bad[0]} is not a readable image ({len(bad)} such file(s) under {split_root}); "
                        "remove them, or set strict_data: false to skip them")
    if bad:
        log.warning("%s: skipped %d unreadable image file(s), e.g. %s", split_root, len(bad), bad[0])
    files = {c: [p for p in paths if ok[p]] for c, paths in candidates.items()}
    for c, paths in files.items():
        if not paths:
            raise DataError(f"class folder {split_root / c}: none of its {len(candidates[c])} image files "
                            "can be read")
    return files


def _select_classes(files: dict[str, list[Path]], wanted: int | list[str] | None, root: Path) -> list[str]:
    names = list(files)
    if wanted is None:
        return names
    if isinstance(wanted, int):
        if not 2 <= wanted <= len(names):
            raise DataError(f"data_classes={wanted}: {root} has {len(names)} classes; choose 2..{len(names)}")
        return names[:wanted]
    unknown = [c for c in wanted if c not in files]
    if unknown:
        raise DataError(f"data_classes: {unknown} are not class folders of {root}")
    return [c for c in names if c in wanted]


def _split(files: dict[str, list[Path]], classes: list[str], val_share: float,
           seed: int) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Per-class seeded split of one folder; a class keeps at least one training image."""
    rng = np.random.default_rng(seed)
    train, val = {}, {}
    for c in classes:
        order = rng.permutation(len(files[c]))
        n_val = min(round(val_share * len(order)), len(order) - 1)
        val[c] = sorted(files[c][i] for i in order[:n_val])
        train[c] = sorted(files[c][i] for i in order[n_val:])
    return train, val


def _fraction(files: dict[str, list[Path]], fraction: float, seed: int) -> dict[str, list[Path]]:
    if fraction >= 1:
        return files
    rng = np.random.default_rng(seed + 1)  # not the split's stream: a fraction must not follow the split
    return {c: sorted(paths[i] for i in rng.permutation(len(paths))[:max(1, math.ceil(fraction * len(paths)))])
            if paths else [] for c, paths in files.items()}
