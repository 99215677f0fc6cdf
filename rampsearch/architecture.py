"""What an iFormer is made of, apart from its ramp: depths, widths, head size, MLP ratio, pooling.

The paper's three variants (and the project's CPU proxy "nano") are data here; any other
four-stage architecture is an `Architecture` built from explicit values. `ArchChoices` are the
per-stage values an architecture search picks from: the search space parses them and the supernet
samples from them, so they live here, below both.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Sequence

from .errors import UserError

NUM_STAGES = 4


class ArchitectureError(UserError):
    """An architecture that cannot be built (the message names the offending value)."""


@dataclass(frozen=True)
class VariantConfig:
    depths: tuple[int, ...]
    embed_dims: tuple[int, ...]
    # Attention heads of the low-frequency mixer per block, as in the official
    # `attention_heads` lists; None: use the paper-style rule (rampsearch.ramp.paper_style_ramp).
    handset_low_heads: tuple[int, ...] | None = None
    img_size: int = 224


def _runs(*pairs: tuple[int, int]) -> tuple[int, ...]:
    return tuple(value for value, count in pairs for _ in range(count))


VARIANTS: dict[str, VariantConfig] = {
    "small": VariantConfig(
        depths=(3, 3, 9, 3), embed_dims=(96, 192, 320, 384),
        handset_low_heads=_runs((1, 3), (3, 3), (7, 4), (9, 5), (11, 3))),
    "base": VariantConfig(
        depths=(4, 6, 14, 6), embed_dims=(96, 192, 384, 512),
        handset_low_heads=_runs((1, 4), (3, 6), (8, 7), (10, 7), (15, 6))),
    "large": VariantConfig(
        depths=(4, 6, 18, 8), embed_dims=(96, 192, 448, 640),
        handset_low_heads=_runs((1, 4), (3, 6), (10, 9), (12, 9), (19, 8))),
    # Not from the paper: a ~3.5M-param model for CPU proxy trainings at 64 px.
    "nano": VariantConfig(depths=(2, 2, 4, 2), embed_dims=(64, 128, 192, 256), img_size=64),
}


@dataclass(frozen=True)
class Architecture:
    """Everything but the ramp. Widths must be multiples of `head_dim` (every head is head_dim wide)."""

    depths: tuple[int, ...]
    embed_dims: tuple[int, ...]
    head_dim: int = 32
    mlp_ratio: float = 4.0
    pool_sizes: tuple[int, ...] = (2, 2, 1, 1)
    variant: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("depths", "embed_dims", "pool_sizes"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != NUM_STAGES or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ArchitectureError(
                    f"{name} must be {NUM_STAGES} positive integers (one per stage), got {list(value)}")
        if not (isinstance(self.head_dim, int) and self.head_dim >= 2 and self.head_dim % 2 == 0):
            raise ArchitectureError(f"head_dim must be a positive even integer, got {self.head_dim}")
        bad = [d for d in self.embed_dims if d % self.head_dim]
        if bad:
            raise ArchitectureError(
                f"embed_dims {list(self.embed_dims)}: {bad} not a multiple of head_dim={self.head_dim}; "
                f"use multiples such as {[max(1, round(d / self.head_dim)) * self.head_dim for d in self.embed_dims]}")
        if not self.mlp_ratio > 0:
            raise ArchitectureError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")

    @classmethod
    def resolve(cls, variant: str | None = None, *, depths: Sequence[int] | None = None,
                embed_dims: Sequence[int] | None = None, head_dim: int = 32, mlp_ratio: float = 4.0,
                pool_sizes: Sequence[int] = (2, 2, 1, 1)) -> "Architecture":
        """A variant's depths/widths, with any explicit value taking precedence."""
        as_tuple = lambda v: None if v is None else tuple(v)  # noqa: E731 - hashable for the cache
        return _resolve(variant, as_tuple(depths), as_tuple(embed_dims), head_dim, mlp_ratio, tuple(pool_sizes))

    @classmethod
    def _resolve_uncached(cls, variant: str | None, depths: tuple[int, ...] | None,
                          embed_dims: tuple[int, ...] | None, head_dim: int, mlp_ratio: float,
                          pool_sizes: tuple[int, ...]) -> "Architecture":
        if variant is not None:
            if variant not in VARIANTS:
                raise ArchitectureError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
            config = VARIANTS[variant]
            depths = config.depths if depths is None else tuple(depths)
            embed_dims = config.embed_dims if embed_dims is None else tuple(embed_dims)
            if (depths, embed_dims) != (config.depths, config.embed_dims):
                variant = None  # a modified variant is just another architecture
        elif depths is None or embed_dims is None:
            raise ArchitectureError("give a variant (nano/small/base/large) or both depths and embed_dims")
        return cls(tuple(depths), tuple(embed_dims), head_dim, mlp_ratio, tuple(pool_sizes), variant)

    # cached: budget checks read these millions of times
    @cached_property
    def num_blocks(self) -> int:
        return sum(self.depths)

    @cached_property
    def block_stages(self) -> tuple[int, ...]:
        """Stage index (0-based) of every block, in order."""
        return tuple(s for s, depth in enumerate(self.depths) for _ in range(depth))

    @cached_property
    def block_widths(self) -> tuple[int, ...]:
        return tuple(self.embed_dims[s] for s in self.block_stages)

    @cached_property
    def block_units(self) -> tuple[int, ...]:
        """Heads of head_dim channels per block: the granularity of the ramp."""
        return tuple(w // self.head_dim for w in self.block_widths)

    def build_kwargs(self) -> dict[str, Any]:
        """The architecture as `build_iformer` / `estimate_flops` keywords."""
        return {"depths": self.depths, "embed_dims": self.embed_dims, "head_dim": self.head_dim,
                "mlp_ratio": self.mlp_ratio, "pool_sizes": self.pool_sizes}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["depths"], data["embed_dims"], data["pool_sizes"] = (
            list(self.depths), list(self.embed_dims), list(self.pool_sizes))
        if data["variant"] is None:
            del data["variant"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Architecture":
        known = {"variant", "depths", "embed_dims", "head_dim", "mlp_ratio", "pool_sizes"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ArchitectureError(f"unknown architecture keys {unknown}; allowed: {sorted(known)}")
        return cls.resolve(data.get("variant"), depths=data.get("depths"), embed_dims=data.get("embed_dims"),
                           head_dim=data.get("head_dim", 32), mlp_ratio=data.get("mlp_ratio", 4.0),
                           pool_sizes=data.get("pool_sizes", (2, 2, 1, 1)))


@lru_cache(maxsize=1024)
def _resolve(*args) -> Architecture:
    return Architecture._resolve_uncached(*args)


@dataclass(frozen=True)
class ArchChoices:
    """Per-stage ranges/choices of the architecture search; None keeps the base architecture's value."""

    depths: tuple[tuple[int, int], ...] | None = None  # (min, max) per stage
    embed_dims: tuple[tuple[int, ...], ...] | None = None  # choices per stage
    mlp_ratio: tuple[float, ...] | None = None
    pool_sizes: tuple[tuple[int, ...], ...] | None = None  # choices per stage

    def suggest(self, trial: Any, base: Architecture) -> Architecture:
        depths = (tuple(trial.suggest_int(f"depth_{s + 1}", lo, hi) for s, (lo, hi) in enumerate(self.depths))
                  if self.depths else base.depths)
        dims = (tuple(trial.suggest_categorical(f"dim_{s + 1}", list(c)) for s, c in enumerate(self.embed_dims))
                if self.embed_dims else base.embed_dims)
        mlp = trial.suggest_categorical("mlp_ratio", list(self.mlp_ratio)) if self.mlp_ratio else base.mlp_ratio
        pools = (tuple(trial.suggest_categorical(f"pool_{s + 1}", list(c)) for s, c in enumerate(self.pool_sizes))
                 if self.pool_sizes else base.pool_sizes)
        return Architecture(depths, dims, base.head_dim, mlp, pools)

    def params_of(self, arch: Architecture) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.depths:
            params.update({f"depth_{s + 1}": d for s, d in enumerate(arch.depths)})
        if self.embed_dims:
            params.update({f"dim_{s + 1}": d for s, d in enumerate(arch.embed_dims)})
        if self.mlp_ratio:
            params["mlp_ratio"] = arch.mlp_ratio
        if self.pool_sizes:
            params.update({f"pool_{s + 1}": p for s, p in enumerate(arch.pool_sizes)})
        return params

    def architectures(self, base: Architecture) -> list[tuple[Architecture, Architecture]]:
        """(shallowest, deepest) architecture per combination of widths, MLP ratio and pooling."""
        depths = self.depths or tuple((d, d) for d in base.depths)
        dims = self.embed_dims or tuple((d,) for d in base.embed_dims)
        pools = self.pool_sizes or tuple((p,) for p in base.pool_sizes)
        out = []
        for mlp in self.mlp_ratio or (base.mlp_ratio,):
            for d in itertools.product(*dims):
                for p in itertools.product(*pools):
                    shallow = Architecture(tuple(lo for lo, _ in depths), d, base.head_dim, mlp, p)
                    deep = Architecture(tuple(hi for _, hi in depths), d, base.head_dim, mlp, p)
                    out.append((shallow, deep))
        return out
