"""Which model to build, as data (`ModelSpec`), and the one way to build it (`build_model`).

A model is an iFormer (an `Architecture` with a `RampSchedule`), a ViT baseline that
`--baselines` retrains at matched FLOPs (a `BaselineSpec`: DeiT, CrossViT or T2T-ViT), or the
weight-sharing supernet of a search space (a `SupernetSpec`, rampsearch.supernet). Training,
retraining, the report and the baselines all build through `build_model`, so a model trained in
one place is rebuilt identically in another. A spec round-trips through JSON (`to_dict`/`from_dict`),
which is how retrain/plan.json and checkpoints name their models.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from .architecture import Architecture
from .errors import UserError
from .ramp import RampSchedule

IFORMER, VIT, SUPERNET = "iformer", "vit", "supernet"


@dataclass(frozen=True)
class ModelSpec:
    """An iFormer (`architecture` + `ramp`), a ViT baseline (`vit`) or a supernet (`supernet`), for
    inputs of `img_size` px."""

    img_size: int
    architecture: Architecture | None = None
    ramp: RampSchedule | None = None
    vit: Any = None  # rampsearch.baselines.BaselineSpec
    supernet: Any = None  # rampsearch.supernet.SupernetSpec

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.architecture, self.vit, self.supernet)) != 1:
            raise UserError("a model is exactly one of an iFormer (architecture and ramp), a ViT baseline or a "
                            "supernet")
        if self.architecture is not None:
            if self.ramp is None:
                object.__setattr__(self, "ramp", RampSchedule.handset(self.architecture))
            self.ramp.high_heads(self.architecture)  # validates, naming the block

    @classmethod
    def iformer(cls, architecture: Architecture, ramp: RampSchedule | None, img_size: int) -> "ModelSpec":
        return cls(img_size, architecture=architecture, ramp=ramp)

    @property
    def kind(self) -> str:
        return VIT if self.vit is not None else SUPERNET if self.supernet is not None else IFORMER

    @property
    def variant(self) -> str | None:
        """The paper variant this iFormer is (small/base/large/nano), for per-variant recipe overrides."""
        return self.architecture.variant if self.architecture is not None else None

    def to_dict(self) -> dict[str, Any]:
        if self.vit is not None:
            return {"kind": VIT, "img_size": self.img_size, "vit": dataclasses.asdict(self.vit)}
        if self.supernet is not None:
            return {"kind": SUPERNET, "img_size": self.img_size, "supernet": self.supernet.to_dict()}
        return {"kind": IFORMER, "img_size": self.img_size, "architecture": self.architecture.to_dict(),
                "ramp": list(self.ramp.ratios)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if data.get("kind") == VIT:
            from .baselines import BaselineSpec

            return cls(data["img_size"], vit=BaselineSpec(**data["vit"]))
        if data.get("kind") == SUPERNET:
            from .supernet import SupernetSpec

            return cls(data["img_size"], supernet=SupernetSpec.from_dict(data["supernet"]))
        return cls(data["img_size"], architecture=Architecture.from_dict(data["architecture"]),
                   ramp=RampSchedule(tuple(data["ramp"])))


def build_model(spec: ModelSpec, num_classes: int, drop_path_rate: float = 0.0) -> nn.Module:
    """The freshly initialized model `spec` describes, with a `num_classes`-way head."""
    if spec.vit is not None:
        from .baselines import build_baseline

        vit = dataclasses.replace(spec.vit, kwargs={**spec.vit.kwargs, "num_classes": num_classes})
        return build_baseline(vit, drop_path_rate=drop_path_rate)
    if spec.supernet is not None:
        from .supernet import RampSupernet

        return RampSupernet(spec.supernet, num_classes, drop_path_rate)
    from .models import build_iformer

    return build_iformer(**spec.architecture.build_kwargs(), ramp=spec.ramp, img_size=spec.img_size,
                         num_classes=num_classes, drop_path_rate=drop_path_rate)
