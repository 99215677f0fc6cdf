"""Batch transforms of uint8 images on the training device: what timm's per-image PIL transforms do, a
batch at a time.

A proxy trial at 64-128 px on a GPU trains thousands of images a second; decoding and augmenting each
one with PIL on the CPU would starve it. These transforms take a uint8 batch (N x 3 x H x W) already
on the training device and return the normalized float batch the model trains on:

- `Normalize`: (x - 255 mean) / (255 std), per channel; all synthetic-freq uses (module doc there).
- `CenterCrop`: the eval transform of a cached folder: the centre `img_size` square of the stored
  square, then `Normalize`. The cache stores each image resized as timm's eval transform resizes it
  (shorter side to floor(img_size / crop_pct)), so this is timm's eval transform.
- `TrainAugment`: timm's proxy training transform: random resized crop (timm's sampling of area and
  log-ratio, 10 attempts, then the whole image), horizontal flip, colour jitter (brightness, contrast,
  saturation in a random order), `Normalize`, then timm's `RandomErasing` (which works on batches).
  RandAugment/AutoAugment is not here: a recipe with `auto_augment` uses timm's PIL path (the paper
  recipe at full resolution, where that path is the right tool). Mixup/CutMix stay in the trainer:
  timm's `Mixup` already works on device batches.

Randomness: every parameter is drawn on the CPU from the `generator` the caller passes (the loader
seeds one per step from (seed, epoch, step)), then moved to the device, so a batch is augmented alike
on a CPU and a GPU and alike for every ramp trained with one seed (the paired comparisons of
rampsearch.retrain need that). Only `RandomErasing` draws from Python's `random` (timm's), which
training re-seeds every epoch.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from timm.data.random_erasing import RandomErasing

# timm's RandomResizedCropAndInterpolation tries this many (area, ratio) draws before it falls back.
RRC_ATTEMPTS = 10
# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale (colour jitter's contrast and saturation).
LUMA = (0.299, 0.587, 0.114)


class BatchTransform(Protocol):
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 N x 3 x H x W on the device -> normalized float32 N x 3 x h x w on the same device."""


class Normalize:
    """(x - 255 mean) / (255 std) per channel, in float32."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # copies per device: no copy per batch

    def __repr__(self) -> str:
        return f"Normalize(mean={(self.mean / 255).flatten().tolist()}, std={(self.std / 255).flatten().tolist()})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.device not in self._on:
            self._on[images.device] = (self.mean.to(images.device), self.std.to(images.device))
        mean, std = self._on[images.device]
        return (images.float() - mean) / std


class CenterCrop:
    """The centre `size` square (torchvision's rounding of the offset), then `Normalize`."""

    def __init__(self, size: int, normalize: Normalize) -> None:
        self.size, self.normalize = size, normalize

    def __repr__(self) -> str:
        return f"CenterCrop({self.size}, {self.normalize!r})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = images.shape[-2:]
        top, left = int(round((height - self.size) / 2.0)), int(round((width - self.size) / 2.0))
        return self.normalize(images[..., top:top + self.size, left:left + self.size], generator)


class TrainAugment:
    """Random resized crop to `size`, flip, colour jitter, normalize, random erasing; see the module doc."""

    def __init__(self, size: int, scale: Sequence[float], ratio: Sequence[float], hflip: float,
                 color_jitter: float, interpolation: str, normalize: Normalize, reprob: float = 0.0,
                 remode: str = "pixel", recount: int = 1) -> None:
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.hflip, self.jitter, self.normalize = hflip, color_jitter, normalize
        self.mode = "bicubic" if interpolation == "bicubic" else "bilinear"  # grid_sample's two smooth modes
        self.reprob, self.remode, self.recount = reprob, remode, recount

    def __repr__(self) -> str:
        return (f"TrainAugment({self.size}, scale={self.scale}, ratio={self.ratio}, hflip={self.hflip}, "
                f"color_jitter={self.jitter}, mode={self.mode!r}, reprob={self.reprob}, {self.normalize!r})")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, height, width = images.shape
        boxes = crop_boxes(n, height, width, self.scale, self.ratio, generator)
        flips = torch.rand(n, generator=generator) < self.hflip
        x = _resized_crops(images.float(), boxes, flips, self.size, self.mode)
        if self.jitter > 0:
            x = _colour_jitter(x, self.jitter, generator)
        x = self.normalize(x.clamp_(0, 255))
        if self.reprob > 0:
            x = RandomErasing(self.reprob, mode=self.remode, max_count=self.recount, device=str(x.device))(x)
        return x


def crop_boxes(n: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
               generator: torch.Generator | None = None) -> torch.Tensor:
    """N x 4 crop boxes (top, left, h, w) in pixels, drawn as timm's RandomResizedCrop draws them: an
    area share in `scale` and a log-uniform aspect ratio in `ratio`; the first of RRC_ATTEMPTS draws
    that fits the image, else the whole image clipped to the ratio range (timm's fallback)."""
    area = height * width
    shares = torch.empty(n, RRC_ATTEMPTS).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n, RRC_ATTEMPTS).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    w = (shares * area * aspect).sqrt().round()
    h = (shares * area / aspect).sqrt().round()
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    picked = first.clamp(min=0).unsqueeze(1)
    w, h = w.gather(1, picked).squeeze(1), h.gather(1, picked).squeeze(1)
    offsets = torch.rand(n, 2, generator=generator)
    top = (offsets[:, 0] * (height - h + 1)).floor()
    left = (offsets[:, 1] * (width - w + 1)).floor()
    fh, fw = _fallback_crop(height, width, ratio)
    missing = first < 0
    h, w = torch.where(missing, float(fh), h), torch.where(missing, float(fw), w)
    top = torch.where(missing, float((height - fh) // 2), top)
    left = torch.where(missing, float((width - fw) // 2), left)
    return torch.stack([top, left, h, w], 1)


def _fallback_crop(height: int, width: int, ratio: Sequence[float]) -> tuple[int, int]:
    """timm's crop when no draw fits: the whole image, narrowed to the nearest ratio in range."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def _resized_crops(x: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Each image's box resampled to size x size (flipped where `flips`), in one grid_sample."""
    n, _, height, width = x.shape
    top, left, h, w = boxes.to(x.device).unbind(1)
    sign = torch.where(flips.to(x.device), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = sign * w / width  # normalized coordinates: the box's half-width over the image's
    theta[:, 0, 2] = (2 * left + w) / width - 1  # the box's centre
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def _colour_jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [max(0, 1 - s), 1 + s] per image, in a random order
    (one order per batch), on 0..255 floats, clamped after each as torchvision does."""
    n = len(x)
    factors = torch.empty(3, n).uniform_(max(0.0, 1 - strength), 1 + strength, generator=generator)
    factors = factors.to(x.device).view(3, n, 1, 1, 1)
    luma = torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)
    for which in torch.randperm(3, generator=generator).tolist():
        if which == 0:  # brightness
            x = x * factors[0]
        elif which == 1:  # contrast: towards the image's mean grey
            grey = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            x = (x - grey) * factors[1] + grey
        else:  # saturation: towards each pixel's grey
            grey = (x * luma).sum(1, keepdim=True)
            x = (x - grey) * factors[2] + grey
        x = x.clamp(0, 255)
    return x
