"""Spectra of the retrained models: load each schedule's seed-0 weights and probe validation images."""
from __future__ import annotations

import torch

from ..architecture import Architecture
from ..checkpoint import load_weights
from ..config import load_recipe
from ..data import build_datasets
from ..models import build_iformer
from .frequency import high_frequency_profile


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
        arch = Architecture.from_dict(contender["architecture"])
        model = build_iformer(depths=arch.depths, embed_dims=arch.embed_dims, ramp=contender["ramp"],
                              head_dim=arch.head_dim, mlp_ratio=arch.mlp_ratio, pool_sizes=arch.pool_sizes,
                              img_size=space.img_size, num_classes=datasets.num_classes)
        load_weights(weights, model)
        profiles[contender["name"]] = high_frequency_profile(model, images)
    return profiles
