"""What the timm entrypoints of this package's model families share."""
from __future__ import annotations

from typing import Any

# Keys timm.create_model passes to every entrypoint; no weights are hosted to use them with.
TIMM_FACTORY_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def model_kwargs(family: str, pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The model's own keyword arguments from a timm entrypoint call."""
    if pretrained:
        raise ValueError(f"no {family} weights are hosted (nothing can be downloaded); build it with "
                         "pretrained=False and pass checkpoint_path=... to timm.create_model")
    return {k: v for k, v in kwargs.items() if k not in TIMM_FACTORY_KEYS}
