"""Spectra of the retrained models: load each schedule's seed-0 weights and probe validation images.

Models are rebuilt from the spec retraining stored in plan.json, through `build_model`, the one
way rampsearch builds a model; the images are the validation split of the retraining's data,
made with the retraining's recipe (its `overrides` over the search's proxy overrides).
"""
from __future__ import annotations

import torch

from ..checkpoint import load_weights
from ..config import Recipe, load_recipe
from ..data import build_datasets
from ..model_spec import ModelSpec, build_model
from .frequency import high_frequency_profile

WEIGHTS = "model.safetensors"  # what a finished training leaves in RETRAIN_DIR/NAME/seedS/


def retrain_recipe(data) -> Recipe:
    """The recipe the retraining trained with (plan.json's settings), for the retrained models' variant."""
    settings = data.plan["settings"]
    overrides = {**data.space.proxy.overrides, **(settings.get("overrides") or {})}
    return load_recipe(settings["recipe"], overrides, data.variant)


def trained_profiles(data, n_images: int) -> dict[str, list[float]]:
    """Per retrained iFormer schedule with seed-0 weights, the high-frequency profile over its blocks."""
    weights = {c["name"]: data.retrain / c["name"] / "seed0" / WEIGHTS
               for c in data.plan["contenders"] if c["kind"] == "ramp"}
    weights = {name: path for name, path in weights.items() if path.exists()}
    if not weights:
        return {}
    datasets = build_datasets(data.space.proxy.data, retrain_recipe(data), data.img_size)
    images = torch.stack([datasets.val[i][0] for i in range(min(n_images, len(datasets.val)))])
    specs = {c["name"]: ModelSpec.from_dict(c["spec"]) for c in data.plan["contenders"]}
    profiles = {}
    for name, path in weights.items():
        model = build_model(specs[name], datasets.num_classes)
        load_weights(path, model)
        profiles[name] = high_frequency_profile(model, images)
    return profiles
