"""Images held as uint8 arrays (generated, or a decoded cache) and the loader that batches them on the
training device.

`TensorImages` is a data set of uint8 images in memory (a torch tensor N x 3 x H x W, maybe on a
GPU) or memory-mapped (a numpy array N x H x W x 3 of the decoded proxy cache), with labels and a
`BatchTransform` (rampsearch.data.augment). `ImageBatches` is what training iterates over instead of
a DataLoader for such a set: it takes a batch of indices from the sampler, gathers those rows in one
indexing operation, moves the uint8 batch to the device (a quarter of the bytes of float32) and
transforms it there. No worker processes, no per-image Python, no collation.

Random draws: the transform of step s of epoch e draws from a generator seeded with (seed, rank, e, s)
(`step_generator`), so a batch's augmentation does not depend on what else drew random numbers
(dropout, drop path), on the device, or on the ramp: every ramp trained with one seed sees the same
images.

Indexing one item (`dataset[i]`, as a DataLoader or the one-shot scorer does) returns the normalized
float image on the CPU, transformed with torch's global generator, like timm's folder datasets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sized

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import BatchTransform


class TensorImages(Dataset):
    """uint8 images (rows `rows` of `images`; all when None) with `labels`, transformed by `transform`;
    `sources` names the file each image was decoded from (a cached folder), as timm's `reader.samples`."""

    def __init__(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor, transform: BatchTransform,
                 rows: np.ndarray | None = None, sources: list[Path] | None = None) -> None:
        if rows is not None and len(rows) != len(labels):
            raise ValueError(f"{len(rows)} rows for {len(labels)} labels")
        self.images, self.labels, self.transform, self.rows = images, labels, transform, rows
        self.sources = sources

    @property
    def samples(self) -> list[tuple[str, int]]:
        """(source file, label) of every image, as timm's folder datasets list them (empty if generated)."""
        return [(str(path), int(label)) for path, label in zip(self.sources or [], self.labels.tolist())]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: torch.Tensor | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The uint8 images (N x 3 x H x W, where they are stored) and labels at `indices`."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        labels = self.labels[indices.to(self.labels.device)]
        if isinstance(self.images, torch.Tensor):
            return self.images[indices.to(self.images.device)], labels
        rows = indices.numpy() if self.rows is None else self.rows[indices.numpy()]
        order = np.argsort(rows, kind="stable")  # ascending rows: sequential reads of the memory map
        batch = np.empty((len(rows), *self.images.shape[1:]), np.uint8)
        batch[order] = self.images[rows[order]]
        return torch.from_numpy(batch).permute(0, 3, 1, 2), labels  # N x H x W x 3 -> N x 3 x H x W (a view)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.take([index])
        return self.transform(images)[0].cpu(), int(labels[0])


def step_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from `keys` (seed, epoch, step) through numpy's SeedSequence."""
    state = np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]) % 2**63)


class ImageBatches:
    """Batches of a TensorImages set on `device`: indices from `sampler` (default: in order), `batch_size` at
    a time, transformed there with draws keyed by (*seed, epoch, step); `set_epoch` sets the epoch (the
    sampler's order is the sampler's: a DistributedSampler's own set_epoch). Iterates like a
    DataLoader: (images, target) pairs, and `len()` is the number of batches."""

    def __init__(self, dataset: TensorImages, batch_size: int, device: torch.device | str, seed: tuple[int, ...],
                 sampler: Iterable[int] | None = None, drop_last: bool = False) -> None:
        self.dataset, self.batch_size, self.device, self.seed = dataset, batch_size, torch.device(device), seed
        self.sampler: Iterable[int] = sampler if sampler is not None else range(len(dataset))
        self.drop_last, self.epoch = drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.sampler) if isinstance(self.sampler, Sized) else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        for step in range(len(self)):
            images, labels = self.dataset.take(order[step * self.batch_size:(step + 1) * self.batch_size])
            images = images.to(self.device, non_blocking=True)
            yield (self.dataset.transform(images, step_generator(*self.seed, self.epoch, step)),
                   labels.to(self.device, non_blocking=True))
