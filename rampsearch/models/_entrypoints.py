"""What the timm entrypoints of this package's model families share: resolving their pretrained cfg, and
the two helpers timm's own families import from its private modules (reached here and nowhere else;
tests/test_backbone.py exercises both through forward_intermediates and the local-dir export)."""
from __future__ import annotations

import dataclasses
from typing import Any

from timm.layers import get_device_dtype, to_2tuple
from torch import nn
from timm.models import PretrainedCfg, resolve_pretrained_cfg
from timm.models._features import feature_take_indices  # noqa: F401 - (indices, max index) of forward_intermediates
from timm.models._input import update_model_args  # noqa: F401 - records reconstruction args for save_for_hf

NO_WEIGHTS_HELP = (
    "no {family} weights are hosted (nothing can be downloaded); give pretrained=True a source: "
    "timm.create_model('{name}', pretrained=True, pretrained_cfg_overlay=dict(file='weights.pth')), "
    "timm.create_model('local-dir:DIR', pretrained=True) for a timm.models.save_for_hf export, "
    "or pretrained=False with checkpoint_path='weights.pth'")


def entrypoint_cfg(name: str, family: str, pretrained: bool, kwargs: dict[str, Any]) -> PretrainedCfg:
    """The pretrained cfg of entrypoint `name`, sized like the model it builds.

    Pops `pretrained_cfg` / `pretrained_cfg_overlay` from the entrypoint's `kwargs` (timm's precedence:
    registry < pretrained_cfg < overlay) and defaults `img_size` / `in_chans` in kwargs to the cfg's input_size.
    The returned input_size describes the weights the model will hold: the model's spatial size (the
    checkpoint filters resample position embeddings to it) and, when loading, the source's channel count
    (timm adapts the first conv from it). pretrained=True without a weight source is an error.
    """
    cfg = resolve_pretrained_cfg(name, kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None))
    if pretrained and not (cfg.has_weights or cfg.state_dict is not None):
        raise ValueError(NO_WEIGHTS_HELP.format(family=family, name=name))
    channels, *size = cfg.input_size
    img_size = to_2tuple(kwargs.setdefault("img_size", tuple(size)))
    in_chans = kwargs.setdefault("in_chans", channels)
    return dataclasses.replace(cfg, input_size=(channels if pretrained else in_chans, *img_size))


def reset_head(model: nn.Module, num_classes: int, global_pool: str | None, pools: tuple[str, ...]) -> None:
    """timm's `reset_classifier` for both families: a new Linear head on `model.num_features` for
    `num_classes` (0: none), on the model's device and dtype; `global_pool`, if given, one of `pools`."""
    if global_pool is not None:
        if global_pool not in pools:
            raise ValueError(f"global_pool {global_pool!r}: choose one of {pools}")
        model.global_pool = global_pool
    model.num_classes = num_classes
    model.head = (nn.Linear(model.num_features, num_classes, **get_device_dtype(model)) if num_classes > 0
                  else nn.Identity())
