"""synthetic-freq: the built-in data set, generated procedurally (no download).

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
depends only on (seed, split, index, resolution, class counts, texture) and not on how many are made;
`_Draw` lists which uniform draw sets what, in the order they are drawn. Labels cycle through the
classes (balanced). The set is generated once per process and cached in memory as uint8 (a few
thousand 64x64 images per second); a set that would not fit this machine's physical memory is refused
before anything is allocated (`_synthetic_bytes`). tests/test_data.py pins the SHA-256 of a few sets:
a change to the generator, however small, changes them.

Its labels are not invariant to flips, crops or rotations (they change orientations and
layouts), so synthetic-freq uses none of the recipe's image transforms; batch-level mixup/cutmix
and label smoothing still apply.
"""
from __future__ import annotations

import logging
import math
import os
from functools import lru_cache, partial

import numpy as np
import torch

from ..config import FINAL, SEARCH, Recipe
from .augment import Normalize
from .base import ONE_CLASS, DataError, Datasets
from .splits import search_split_indices
from .tensors import TensorImages

log = logging.getLogger(__name__)

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
COLOUR = (0.1, 0.9)  # background and blob colour, each channel (0..1): never fully black or white
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
# dot-lattice texture (pixels)
LATTICE_SPACING_PX = (5.0, 6.5)  # dot spacing along the class orientation
LATTICE_GAP_PX = (9.0, 12.0)  # spacing of the rows
LATTICE_JITTER_PX = 1.0  # each dot moves up to +-half of it, either axis
LATTICE_DROP = 0.15  # share of dots left out
LATTICE_GAIN = 1.6  # a bilinearly splatted dot's peak is below 1; this brings most dots to full ink
LATTICE_INK = (0.5, 1.0)  # dot opacity
LATTICE_TINT = 0.3  # dots are black or white, each channel moved by up to +-half of it
LATTICE_DISK_CONTRAST = (0.15, 0.5)  # the disks' offset from the ground colour
LATTICE_DISK_CHANNEL = (0.3, 1.0)  # each channel's share of that offset: the disks are tinted, not grey
LATTICE_NOISE = (0.02, 0.1)  # lower than NOISE: the dots are a pixel or two wide
# Half the lattice's extent, in image sides, each way from the centre: above sqrt(2)/2 (half the
# diagonal), so the rows cover the corners at any angle.
LATTICE_REACH = 0.75


class _Draw:
    """Column of each per-image uniform draw (in [0, 1)) in `_render`'s `u`, in the order they are drawn.

    `synthetic_freq` draws, per image and from that image's own generator: the COMMON uniforms
    (columns 0..17), then the unit pixel noise, then, for the dot lattice only, the lattice's uniforms
    (columns 18..). Both textures make the common draws, so adding the lattice changed no grating
    image; columns 11..16 mean one thing for the grating and another for the lattice and carry a name
    for each. The comment after a column names the range it is mapped to. Moving a column, or a draw
    in the order, changes every image (tests/test_data.py pins their hashes).
    """

    BACKGROUND = slice(0, 3)  # background colour, RGB: COLOUR
    GRADIENT_DIRECTION = 3  # of the background's linear gradient: full circle
    GRADIENT_AMPLITUDE = 4  # of that gradient across the image: 0..GRADIENT
    SHIFT_X = 5  # the layout's centre: +-SHIFT/2
    SHIFT_Y = 6
    SPREAD = 7  # the blobs' distance from the layout's centre: SPREAD
    ROTATION = 8  # of the layout: +-ROTATION_DEG/2
    RADIUS = 9  # of every blob: RADIUS
    ORIENTATION_JITTER = 10  # around the class orientation: +-ORIENTATION_JITTER_DEG/2
    PERIOD = LATTICE_SPACING = 11  # grating: period, PERIOD_PX | lattice: dots along a row, LATTICE_SPACING_PX
    PHASE = LATTICE_GAP = 12  # grating: phase, full cycle | lattice: rows apart, LATTICE_GAP_PX
    CONTRAST = LATTICE_INK = 13  # grating: amplitude, CONTRAST | lattice: dot opacity, LATTICE_INK
    BLOB_COLOUR = DISK_CHANNEL = slice(14, 17)  # grating: blob colour, RGB, COLOUR | lattice: LATTICE_DISK_CHANNEL
    NOISE = 17  # pixel noise standard deviation: NOISE | LATTICE_NOISE
    COMMON = 18  # how many draws every image makes (then its pixel noise)
    # dot lattice only, after the pixel noise
    LATTICE_ORIGIN_ALONG = 18  # shift of the lattice along its rows, in dot spacings: 0..1
    LATTICE_ORIGIN_ACROSS = 19  # and across them, in row gaps: 0..1
    DISK_SIGN = 20  # the disks are darker than the ground below 0.5, lighter above
    DISK_CONTRAST = 21  # their offset from the ground: LATTICE_DISK_CONTRAST
    INK_TINT = slice(22, 25)  # of the dots, RGB: +-LATTICE_TINT/2
    DOTS = 25  # the first per-dot draw: PER_DOT of them for each dot of the lattice, dot by dot
    # within one dot's draws
    DOT_JITTER_X = 0  # +-LATTICE_JITTER_PX/2
    DOT_JITTER_Y = 1
    DOT_DROP = 2  # the dot is left out below LATTICE_DROP
    PER_DOT = 3


# Images rendered at once: bounds _render's float32 temporaries (about _RENDER_TEMPORARIES images of
# this many: 75 MB at 64 px, 300 MB at 128 px) whatever the set's size, while chunks stay large enough
# for vectorized ops. Every image is rendered on its own, so this changes no pixel (checked: 7 to 1000
# give the pinned hashes).
_RENDER_CHUNK = 512
# Float32 N x 3 x H x W buffers _render holds at its peak besides the noise it renders into (measured:
# 2.2-2.8 at 128-256 px); part of the memory estimate in _synthetic_bytes.
_RENDER_TEMPORARIES = 3


def synthetic_datasets(recipe: Recipe, img_size: int, split: str = FINAL, device: str = "cpu") -> Datasets:
    """The generated train and val sets (FINAL), or the train set split into search-train and search split
    (SEARCH: the val set is not made); generated on `device` and kept there."""
    check_synthetic(recipe, img_size, split)
    low, high = recipe.synthetic_low_classes, recipe.synthetic_high_classes
    classes = [f"layout{i}_orientation{j}" for i in range(low) for j in range(high)]

    def made(part: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        return synthetic_freq(low, high, per_class * len(classes), img_size, recipe.synthetic_seed, part,
                              recipe.synthetic_texture, str(device))

    normalize = Normalize(recipe.mean, recipe.std)  # no image transform: see the module doc
    images, labels = made("train", recipe.synthetic_train_per_class)
    if split == SEARCH:
        kept, held = (torch.from_numpy(i).to(labels.device) for i in
                      search_split_indices(labels.cpu().numpy(), recipe.search_split, recipe.split_seed))
        log.info("synthetic-freq: %d of %d training images held out as the search split (search_split %g); "
                 "val is not used", len(held), len(labels), recipe.search_split)
        return Datasets(TensorImages(images[kept], labels[kept], normalize),
                        TensorImages(images[held], labels[held], normalize), len(classes), classes)
    val = made("val", recipe.synthetic_val_per_class)
    return Datasets(TensorImages(images, labels, normalize), TensorImages(*val, normalize), len(classes), classes)


def check_synthetic(recipe: Recipe, img_size: int, split: str = FINAL) -> None:
    """Refuse class counts, sizes and set sizes synthetic-freq cannot make here; allocates nothing."""
    low, high = recipe.synthetic_low_classes, recipe.synthetic_high_classes
    if not (1 <= low <= len(LAYOUTS) and 1 <= high <= MAX_TEXTURES):
        raise DataError(f"synthetic-freq: synthetic_low_classes must be in 1..{len(LAYOUTS)} and "
                        f"synthetic_high_classes in 1..{MAX_TEXTURES} (at least 2 classes in all); "
                        f"got {low} and {high}")
    if low * high < 2:
        raise DataError(f"synthetic-freq: synthetic_low_classes {low} x synthetic_high_classes {high} "
                        f"makes one class; {ONE_CLASS}")
    if min(recipe.synthetic_train_per_class, recipe.synthetic_val_per_class) < 1:
        raise DataError("synthetic-freq: synthetic_train_per_class and synthetic_val_per_class must be >= 1; "
                        f"got {recipe.synthetic_train_per_class} and {recipe.synthetic_val_per_class}")
    if split == SEARCH and recipe.synthetic_train_per_class < 2:
        raise DataError(f"synthetic-freq: synthetic_train_per_class {recipe.synthetic_train_per_class} leaves "
                        "nothing to hold out as the search split (data_split: search); it must be >= 2")
    if img_size < 16:
        raise DataError(f"synthetic-freq: img_size {img_size} is too small for its textures; use at least 16")
    need, have = _synthetic_bytes(recipe, img_size), _physical_memory()
    if have is not None and need > have:
        count = (recipe.synthetic_train_per_class + recipe.synthetic_val_per_class) * low * high
        raise DataError(f"synthetic-freq at img_size {img_size}: {count} images need about {need:,} bytes "
                        f"({need / 2**30:,.1f} GiB) to generate, but this machine has {have:,} bytes "
                        f"({have / 2**30:,.1f} GiB) of memory; lower --img-size (img_size) or "
                        "synthetic_train_per_class / synthetic_val_per_class")


def _synthetic_bytes(recipe: Recipe, img_size: int) -> int:
    """Peak memory (bytes) of generating both splits: every uint8 image, plus for the larger split
    the float32 noise buffer and uniform draws `synthetic_freq` allocates and `_render`'s temporaries
    for one chunk. An upper estimate: 5-26% above the peak measured at 64-256 px, both textures."""
    classes = recipe.synthetic_low_classes * recipe.synthetic_high_classes
    counts = (recipe.synthetic_train_per_class * classes, recipe.synthetic_val_per_class * classes)
    values = 3 * img_size * img_size  # per image
    draws = _Draw.COMMON + (_lattice_draws(img_size) if recipe.synthetic_texture == "dot-lattice" else 0)
    largest, float32 = max(counts), np.dtype(np.float32).itemsize
    working = largest * (values + draws) + min(largest, _RENDER_CHUNK) * _RENDER_TEMPORARIES * values
    return sum(counts) * values + float32 * working


def _physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not tell (then nothing is refused)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


@lru_cache(maxsize=4)  # trials in one process share the set
def synthetic_freq(low_classes: int, high_classes: int, count: int, img_size: int, seed: int,
                   split: str, texture: str = "grating", device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images (uint8, N x 3 x img_size x img_size) and labels of one split, on `device`; see the
    module doc. The draws are made on the CPU; a GPU renders the images from them (its rounding may move a
    few pixel values by one from the CPU's, whose sets tests/test_data.py pins)."""
    split_id = {"train": 0, "val": 1}[split]
    labels = np.arange(count) % (low_classes * high_classes)
    lattice = texture == "dot-lattice"
    extra = _lattice_draws(img_size) if lattice else 0
    draws = np.empty((count, _Draw.COMMON + extra), np.float32)
    noise = np.empty((count, 3, img_size, img_size), np.float32)
    for i in range(count):  # in _Draw's order
        rng = np.random.default_rng([seed, split_id, i])
        draws[i, :_Draw.COMMON] = rng.random(_Draw.COMMON, dtype=np.float32)
        noise[i] = rng.standard_normal((3, img_size, img_size), dtype=np.float32)
        draws[i, _Draw.COMMON:] = rng.random(extra, dtype=np.float32)
    images = torch.empty((count, 3, img_size, img_size), dtype=torch.uint8, device=device)
    for start in range(0, count, _RENDER_CHUNK):
        part = slice(start, start + _RENDER_CHUNK)
        images[part] = _render(torch.from_numpy(draws[part]).to(device), torch.from_numpy(labels[part]).to(device),
                               torch.from_numpy(noise[part]).to(device), high_classes, img_size, lattice)
    return images, torch.from_numpy(labels).to(device)


def _render(u: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, high_classes: int,
            size: int, lattice: bool) -> torch.Tensor:
    """Images from per-image uniform draws `u` (N x draws, columns named in `_Draw`) and unit noise
    (N x 3 x H x W, rendered into)."""
    n = len(u)
    draw = partial(_uniform, u)
    layout, orientation = labels // high_classes, labels % high_classes
    axis = (torch.arange(size, dtype=torch.float32, device=u.device) + 0.5) / size - 0.5  # pixel centres, -0.5..0.5
    y, x = axis.view(1, 1, size, 1), axis.view(1, 1, 1, size)

    direction = draw(_Draw.GRADIENT_DIRECTION) * 2 * math.pi
    amplitude = draw(_Draw.GRADIENT_AMPLITUDE, (0, GRADIENT))
    gradient = (direction.cos() * x + direction.sin() * y) * amplitude  # N x 1 x H x W
    background = draw(_Draw.BACKGROUND, COLOUR)  # N x 3 x 1 x 1
    mask = _layout_mask(u, layout, x, y, size)
    theta = orientation.view(n, 1, 1, 1) * (math.pi / high_classes) + \
        (draw(_Draw.ORIENTATION_JITTER) - 0.5) * math.radians(ORIENTATION_JITTER_DEG)
    if lattice:
        # plain disks a little lighter or darker than the ground, dots over everything, noise over that
        sign = torch.where(u[:, _Draw.DISK_SIGN] < 0.5, -1.0, 1.0).view(n, 1, 1, 1)
        strength = draw(_Draw.DISK_CONTRAST, LATTICE_DISK_CONTRAST)
        offset = sign * strength * draw(_Draw.DISK_CHANNEL, LATTICE_DISK_CHANNEL)
        image = (background + gradient).addcmul_(mask, offset)
        spacing = draw(_Draw.LATTICE_SPACING, LATTICE_SPACING_PX).view(n, 1)
        gap = draw(_Draw.LATTICE_GAP, LATTICE_GAP_PX).view(n, 1)
        dots = _lattice_dots(theta.view(n, 1), spacing, gap, u, size)
        dots.mul_(draw(_Draw.LATTICE_INK, LATTICE_INK))
        # light dots on a dark ground, dark on light, slightly tinted
        ink = (background.mean(1, keepdim=True) < 0.5).float() + (draw(_Draw.INK_TINT) - 0.5) * LATTICE_TINT
        image.mul_(1 - dots).addcmul_(dots, ink).add_(noise.mul_(draw(_Draw.NOISE, LATTICE_NOISE)))
    else:
        image = noise.mul_(draw(_Draw.NOISE, NOISE)).add_(background).add_(gradient)
        along = theta.cos() * x + theta.sin() * y
        grating = torch.sin(along * (2 * math.pi * size) / draw(_Draw.PERIOD, PERIOD_PX) +
                            draw(_Draw.PHASE) * 2 * math.pi)
        colour = draw(_Draw.BLOB_COLOUR, COLOUR)
        # inside a blob: its colour plus the grating, without the background's gradient
        image.addcmul_(mask, (colour - background - gradient).add_(grating.mul_(draw(_Draw.CONTRAST, CONTRAST))))
    return image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)


def _uniform(u: torch.Tensor, columns: int | slice, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Per-image draws `columns` (a `_Draw` column or slice), mapped to [low, high], as N x 1 x 1 x 1
    (N x k x 1 x 1 for a slice of k: one value per RGB channel)."""
    return (bounds[0] + u[:, columns] * (bounds[1] - bounds[0])).view(len(u), -1, 1, 1)


def _layout_mask(u: torch.Tensor, layout: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 size: int) -> torch.Tensor:
    """N x 1 x H x W soft mask of each image's blobs: its layout class's template, spread, rotated, shifted."""
    n = len(u)
    slots = max(len(t) for t in LAYOUTS)  # blob slots; a layout with fewer blobs leaves some empty
    template = torch.zeros(len(LAYOUTS), slots, 2, device=u.device)
    present = torch.zeros(len(LAYOUTS), slots, device=u.device)
    for k, points in enumerate(LAYOUTS):
        template[k, :len(points)] = torch.tensor(points)
        present[k, :len(points)] = 1
    angle = (_uniform(u, _Draw.ROTATION) - 0.5) * math.radians(ROTATION_DEG)
    spread, radius = _uniform(u, _Draw.SPREAD, SPREAD), _uniform(u, _Draw.RADIUS, RADIUS)
    cx, cy = (_uniform(u, _Draw.SHIFT_X) - 0.5) * SHIFT, (_uniform(u, _Draw.SHIFT_Y) - 0.5) * SHIFT
    mask = torch.zeros(n, 1, size, size, device=u.device)
    for slot in range(slots):
        ox, oy = template[layout, slot, 0].view(n, 1, 1, 1), template[layout, slot, 1].view(n, 1, 1, 1)
        bx = cx + (ox * angle.cos() - oy * angle.sin()) * spread
        by = cy + (ox * angle.sin() + oy * angle.cos()) * spread
        disk = ((x - bx) ** 2 + (y - by) ** 2).sqrt_().sub_(radius).mul_(-size / EDGE_PX).sigmoid_()
        mask = torch.maximum(mask, disk.mul_(present[layout, slot].view(n, 1, 1, 1)))
    return mask


def _lattice_extent(size: int) -> tuple[int, int]:
    """Dots along and rows across (each way from the centre) that cover a size x size image at any angle.

    Counted at the smallest spacing and gap, plus one for the origin's shift of up to a cell.
    """
    return (math.ceil(LATTICE_REACH * size / LATTICE_SPACING_PX[0]) + 1,
            math.ceil(LATTICE_REACH * size / LATTICE_GAP_PX[0]) + 1)


def _lattice_points(size: int) -> int:
    along, across = _lattice_extent(size)
    return (2 * along + 1) * (2 * across + 1)


def _lattice_draws(size: int) -> int:
    """Uniform draws the dot lattice adds per image after the common ones: see `_Draw`."""
    return _Draw.DOTS - _Draw.COMMON + _Draw.PER_DOT * _lattice_points(size)


def _lattice_dots(theta: torch.Tensor, spacing: torch.Tensor, gap: torch.Tensor, u: torch.Tensor,
                  size: int) -> torch.Tensor:
    """N x 1 x H x W ink (0..1) of a jittered dot lattice: dots `spacing` px apart along theta, rows `gap` apart.

    From the per-image draws `u` (`_Draw`): the lattice's origin shifts it by a fraction of a cell,
    and each dot has its x and y jitter and its drop draw.
    """
    n = len(theta)
    along, across = _lattice_extent(size)
    i, j = torch.meshgrid(torch.arange(-along, along + 1.0, device=u.device),
                          torch.arange(-across, across + 1.0, device=u.device), indexing="ij")
    per_dot = u[:, _Draw.DOTS:].view(n, -1, _Draw.PER_DOT)
    a = (i.reshape(1, -1) + u[:, _Draw.LATTICE_ORIGIN_ALONG, None] - 0.5) * spacing
    b = (j.reshape(1, -1) + u[:, _Draw.LATTICE_ORIGIN_ACROSS, None] - 0.5) * gap
    xs = size / 2 + a * theta.cos() - b * theta.sin() + (per_dot[..., _Draw.DOT_JITTER_X] - 0.5) * LATTICE_JITTER_PX
    ys = size / 2 + a * theta.sin() + b * theta.cos() + (per_dot[..., _Draw.DOT_JITTER_Y] - 0.5) * LATTICE_JITTER_PX
    weight = (per_dot[..., _Draw.DOT_DROP] >= LATTICE_DROP).float()
    canvas = torch.zeros(n, size * size, device=u.device)
    x0, y0 = xs.floor(), ys.floor()
    for dx in (0, 1):  # bilinear splat: sub-pixel positions, so the lattice's angle is not snapped to the grid
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            share = (1 - (xs - xi).abs()) * (1 - (ys - yi).abs()) * weight
            inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
            index = (yi.clamp(0, size - 1) * size + xi.clamp(0, size - 1)).long()
            canvas.scatter_add_(1, index, share * inside)
    return canvas.mul_(LATTICE_GAIN).clamp_(0, 1).view(n, 1, size, size)
