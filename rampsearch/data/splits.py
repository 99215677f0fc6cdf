"""Seeded per-class splits: the search split, the val split of a single folder, `data_fraction`.

A search must not pick its candidates on the images the final comparison reports, so search trials
(`TrainConfig.data_split: search`) hold out `search_split` (recipe key, default 0.2) of every class's
*training* images, train on the rest and are scored on the held-out part; retraining and `rampsearch
train` (`data_split: final`) train on all training images and report val. The search split is a
subset of the training images, so it is disjoint from val by construction. Per class,
round(search_split * n) images are held out, at least one, and at least one stays for training.
Synthetic-freq splits its generated train set by index; image folders split the training file lists
after `data_classes`, the val split and `data_fraction`, and evaluate the held-out images with the eval
transform (no augmentation). Its seed is `split_seed`, through its own stream
(`np.random.default_rng([split_seed, SEARCH_SPLIT_STREAM])`; the val split of a single folder uses
`default_rng(split_seed)` and `data_fraction` `default_rng(split_seed + 1)`), so changing one never
moves the other.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

# Second word of the search split's seed, [split_seed, SEARCH_SPLIT_STREAM]. Non-zero: numpy's
# SeedSequence pads entropy with zeros, so [s, 0] would be the stream of default_rng(s), the val
# split's (and [s + 1, 0] data_fraction's); any non-zero word gives a stream of its own.
SEARCH_SPLIT_STREAM = 2


def search_split_indices(labels: Sequence[int] | np.ndarray, share: float,
                         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices kept for training, indices held out as the search split) of a training set with `labels`.

    Per class (in label order): a permutation from `default_rng([seed, SEARCH_SPLIT_STREAM])`, of which
    the first round(share * n) are held out, at least one, and at least one is kept; both sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(search_seed(seed))
    kept, held = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = members[rng.permutation(len(members))]
        n_held = _held_count(len(members), share, minimum=1)
        held.append(order[:n_held])
        kept.append(order[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def search_seed(split_seed: int) -> list[int]:
    return [split_seed, SEARCH_SPLIT_STREAM]


def _held_count(n: int, share: float, minimum: int = 0) -> int:
    """Of a class's n images, how many a per-class split with `share` holds out: round(share * n), at least
    `minimum`, and never all (a class keeps at least one training image)."""
    return max(0, min(max(minimum, round(share * n)), n - 1))


def split_files(files: dict[str, list[Path]], classes: list[str], share: float, seed: int | list[int],
                minimum: int = 0) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Per-class seeded split of file lists into (kept, held out): the val split of one folder (seed
    `split_seed`), or the search split of the training files (seed `search_seed(split_seed)`, `minimum`
    1). A class holds out `_held_count` of its images and keeps at least one training image."""
    rng = np.random.default_rng(seed)
    kept, held = {}, {}
    for c in classes:
        order = rng.permutation(len(files[c]))
        n_held = _held_count(len(order), share, minimum)
        held[c] = sorted(files[c][i] for i in order[:n_held])
        kept[c] = sorted(files[c][i] for i in order[n_held:])
    return kept, held


def fraction(files: dict[str, list[Path]], fraction: float, seed: int) -> dict[str, list[Path]]:
    if fraction >= 1:
        return files
    rng = np.random.default_rng(seed + 1)  # not the split's stream: a fraction must not follow the split
    return {c: sorted(paths[i] for i in rng.permutation(len(paths))[:max(1, math.ceil(fraction * len(paths)))])
            if paths else [] for c, paths in files.items()}
