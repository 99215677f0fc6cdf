"""Spectra of the retrained models: load each schedule's seed-0 weights and probe validation images."""
from __future__ import annotations

import torch

from ..checkpoint import load_weights
from ..config import load_recipe
from ..data import build_datasets
from .frequency import high_frequency_profile
from .sections import build_contender


def trained_profiles(data, n_images: int) -> dict[str, list[float]]:
    """Per retrained iFormer schedule, the high-frequency profile over blocks (seed-0 weights)."""
    space, settings = data.space, data.plan["settings"]
    recipe = load_recipe(settings["recipe"], space.proxy.get("overrides"))
    datasets = build_datasets(space.proxy.get("data", "synthetic-freq"), recipe, space.img_size)
    images = torch.stack([datasets.val[i][0] for i in range(min(n_images, len(datasets.val)))])
    profiles = {}
    for contender in data.plan["contenders"]:
        weights = data.run_dir / "retrain" / contender["name"] / "seed0" / "model.safetensors"
        if contender["kind"] != "ramp" or not weights.exists():
            continue
        model = build_contender(contender, space.img_size, datasets.num_classes)
        load_weights(weights, model)
        profiles[contender["name"]] = high_frequency_profile(model, images)
    return profiles
