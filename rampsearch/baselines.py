"""The vision transformers `--baselines` retrains, each at the configuration that best fits a FLOPs budget.

For each family, the configuration with the most fvcore FLOPs not above the budget:

- deit: timm's VisionTransformer as DeiT trains it (class token, head_dim 64, MLP ratio 4), over a
  grid of widths and depths. The patch is the largest of 16/8/4/2 that leaves a grid of at least
  8x8 tokens (16 at 224, 8 at 64); pixels past the last whole patch are dropped, as timm does.
- crossvit: timm's crossvit_{tiny,9,small,15,18,base}_240, all built through the tiny entrypoint
  with their architecture fields (timm's crossvit_18_240 cannot take a patch size: its entrypoint
  passes **kwargs twice). timm's CrossViT only works when each
  branch's image tiles exactly into its patches (otherwise its position embeddings have the wrong
  length), and it resizes any input to those sizes itself. So the model is built for the size
  nearest to img_size·240/224 that tiles, with the published patches 12/16 scaled like DeiT's
  (16 → 8 at 64 px): 240 for 224-px data (the published set-up: the large-patch branch sees the
  224-px image as is), 60 for 64-px data (patches 6/8 on the image resized to 60 and 56 px).
  The dagger (†) variants are left out: their convolutional patch embedding only exists for
  patches 12 and 16.
- t2t: T2T-ViT_t-7/10/12/14 (rampsearch.models.t2t_vit).

The CrossViT and T2T-ViT configurations are listed in increasing FLOPs (checked at 64 and 224 px;
within a family every configuration sees the same tokens, so the order hardly depends on the size);
DeiT's grid is ranked by its closed form (`deit_flops`, equal to fvcore's count).

Below its smallest published configuration a family falls back on that configuration with every
embedding width scaled by 3/4, 1/2 or 1/4 (T2T-ViT: head width kept at 64, fewer heads; CrossViT:
three heads kept, narrower heads), noted in the spec as unpublished. If even those are over the
budget, the smallest is used and flagged.

Every FLOPs number is fvcore's count (rampsearch.flops) of the model built at that size, cached per
configuration; a configuration's count costs a trace (about a second), so the search bisects.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable, Sequence

import timm
import torch
from torch import nn

from .errors import UserError
from .flops import count_flops
from .models.t2t_vit import T2T_VIT_CONFIGS  # importing it registers the t2t_vit_t_* names with timm

__all__ = ["FAMILIES", "BaselineError", "BaselineSpec", "baseline_models", "build_baseline",
           "crossvit_geometry", "deit_flops", "vit_patch_size"]

FAMILIES = ("deit", "crossvit", "t2t")

VIT_PATCH_SIZES = (16, 8, 4, 2)
MIN_GRID = 8  # tokens per side a patch size must leave
DEIT_WIDTHS = tuple(range(64, 769, 64))
DEIT_DEPTHS = (4, 6, 8, 10, 12)
DEIT_HEAD_DIM = 64
DEIT_ENTRYPOINT = "deit_tiny_patch16_224"  # a plain VisionTransformer; every field is overridden


def _crossvit(embed_dim: tuple[int, int], large_depth: int, heads: int, mlp_ratio: int) -> dict[str, Any]:
    # three multi-scale blocks of (1 small-branch, large_depth large-branch, 0 extra fusion) blocks
    return {"embed_dim": embed_dim, "depth": ((1, large_depth, 0),) * 3, "num_heads": (heads, heads),
            "mlp_ratio": (mlp_ratio, mlp_ratio, 1)}


# The entrypoints' architecture fields (timm 1.0.31), smallest FLOPs first.
CROSSVIT_CONFIGS: dict[str, dict[str, Any]] = {
    "crossvit_tiny_240": _crossvit((96, 192), 4, 3, 4),
    "crossvit_9_240": _crossvit((128, 256), 3, 4, 3),
    "crossvit_small_240": _crossvit((192, 384), 4, 6, 4),
    "crossvit_15_240": _crossvit((192, 384), 5, 6, 3),
    "crossvit_18_240": _crossvit((224, 448), 6, 7, 3),
    "crossvit_base_240": _crossvit((384, 768), 4, 12, 4),
}
CROSSVIT_ENTRYPOINT = "crossvit_tiny_240"
CROSSVIT_BRANCH_SCALE = 224 / 240  # the entrypoints' img_scale of the large-patch branch

NARROWING = (0.75, 0.5, 0.25)  # width factors tried below a family's smallest published configuration


class BaselineError(UserError):
    """A budget or image size no baseline can be built for."""


@dataclass(frozen=True)
class BaselineSpec:
    family: str  # one of FAMILIES
    name: str  # what to call it in reports
    timm_name: str  # the timm entrypoint build_baseline calls with `kwargs`
    kwargs: dict[str, Any] = field(hash=False)  # the model's img_size and num_classes included
    img_size: int  # of the data, which the FLOPs are counted on (CrossViT's own img_size differs)
    params: int
    flops: int
    over_budget: bool = False
    note: str = ""  # why a configuration is unpublished or over the budget; empty otherwise


def vit_patch_size(img_size: int) -> int:
    """The largest of 16/8/4/2 that leaves at least MIN_GRID tokens per side."""
    for patch in VIT_PATCH_SIZES:
        if img_size // patch >= MIN_GRID:
            return patch
    raise BaselineError(f"img_size {img_size} is too small for the baselines: at least "
                        f"{MIN_GRID * VIT_PATCH_SIZES[-1]} px is needed")


def crossvit_geometry(img_size: int) -> dict[str, Any]:
    """timm CrossViT kwargs (img_size, patch_size) for data of `img_size` px; see the module docstring."""
    large = vit_patch_size(img_size)
    small = large * 3 // 4

    def tiles(size: int) -> bool:  # timm computes the large-patch branch's size exactly this way
        scaled = int(size * CROSSVIT_BRANCH_SCALE)
        return scaled >= large and scaled % large == 0

    target = img_size * 240 / 224
    sizes = [s for s in range(small, 2 * round(target) + 1, small) if tiles(s)]
    size = min(sizes, key=lambda s: (abs(s - target), s))
    return {"img_size": size, "patch_size": (small, large)}


def deit_flops(embed_dim: int, depth: int, patch_size: int, img_size: int, num_classes: int,
               in_chans: int = 3) -> int:
    """fvcore FLOPs of timm's VisionTransformer with a class token and MLP ratio 4, in closed form."""
    n = (img_size // patch_size) ** 2 + 1
    d = embed_dim
    block = 12 * n * d * d + 2 * n * n * d + 10 * n * d  # qkv, proj, MLP; q·k^T, attn·v; two LayerNorms
    return (n - 1) * d * in_chans * patch_size ** 2 + depth * block + 5 * n * d + d * num_classes


@dataclass(frozen=True)
class _Candidate:
    family: str
    name: str
    timm_name: str
    kwargs: tuple[tuple[str, Any], ...]  # hashable, for the count cache
    note: str = ""


@lru_cache(maxsize=None)
def _measure(timm_name: str, kwargs: tuple[tuple[str, Any], ...], img_size: int) -> tuple[int, int]:
    """(params, fvcore FLOPs) of one configuration, counted on data of img_size px.

    Built on the meta device and given uninitialized memory: initializing weights would cost more
    than the trace, and the count does not depend on their values.
    """
    with torch.device("meta"):
        model = timm.create_model(timm_name, pretrained=False, **dict(kwargs))
    model = model.to_empty(device="cpu")
    params = sum(p.numel() for p in model.parameters())
    return params, count_flops(model, img_size)


def _deit_candidates(img_size: int, num_classes: int) -> list[tuple[_Candidate, int]]:
    """Every grid configuration with its closed-form FLOPs, cheapest first."""
    patch = vit_patch_size(img_size)
    found = []
    for width in DEIT_WIDTHS:
        for depth in DEIT_DEPTHS:
            kwargs = {"patch_size": patch, "embed_dim": width, "depth": depth,
                      "num_heads": width // DEIT_HEAD_DIM, "img_size": img_size, "num_classes": num_classes}
            candidate = _Candidate("deit", f"deit_w{width}_d{depth}_p{patch}", DEIT_ENTRYPOINT,
                                   tuple(kwargs.items()))
            found.append((candidate, deit_flops(width, depth, patch, img_size, num_classes)))
    return sorted(found, key=lambda pair: pair[1])


def _crossvit_candidates(img_size: int, num_classes: int) -> list[_Candidate]:
    common = {**crossvit_geometry(img_size), "num_classes": num_classes}
    tiny_name, tiny = next(iter(CROSSVIT_CONFIGS.items()))
    narrowed = [
        _Candidate("crossvit", f"{tiny_name}_x{factor:g}", CROSSVIT_ENTRYPOINT,
                   tuple({**common, **tiny, "embed_dim": tuple(int(d * factor) for d in tiny["embed_dim"])}.items()),
                   f"unpublished: {tiny_name} with embedding widths x{factor:g}")
        for factor in sorted(NARROWING)]
    published = [_Candidate("crossvit", name, CROSSVIT_ENTRYPOINT, tuple({**common, **config}.items()))
                 for name, config in CROSSVIT_CONFIGS.items()]
    return narrowed + published


def _t2t_candidates(img_size: int, num_classes: int) -> list[_Candidate]:
    common = {"img_size": img_size, "num_classes": num_classes}
    smallest = T2T_VIT_CONFIGS["t_7"]
    head_dim = smallest.embed_dim // smallest.num_heads
    narrowed = []
    for factor in sorted(NARROWING):
        width = int(smallest.embed_dim * factor)
        narrowed.append(_Candidate(
            "t2t", f"t2t_vit_t_7_x{factor:g}", "t2t_vit_t_7",
            tuple({**common, "embed_dim": width, "num_heads": width // head_dim}.items()),
            f"unpublished: t2t_vit_t_7 with embed_dim {width} ({width // head_dim} heads)"))
    published = [_Candidate("t2t", f"t2t_vit_{v}", f"t2t_vit_{v}", tuple(common.items())) for v in T2T_VIT_CONFIGS]
    return narrowed + published


def _largest_within(candidates: Sequence[_Candidate], budget: float,
                    flops_of: Callable[[_Candidate], int]) -> int | None:
    """Index of the last candidate within the budget (candidates in increasing FLOPs), or None."""
    lo, hi = -1, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if flops_of(candidates[mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo if lo >= 0 else None


def _spec(candidate: _Candidate, img_size: int) -> BaselineSpec:
    params, flops = _measure(candidate.timm_name, candidate.kwargs, img_size)
    return BaselineSpec(candidate.family, candidate.name, candidate.timm_name, dict(candidate.kwargs),
                        img_size, params, flops, note=candidate.note)


def _pick(candidates: Sequence[_Candidate], budget: float, img_size: int,
          order_flops: Callable[[_Candidate], int]) -> BaselineSpec:
    """The candidate closest to and not above the budget by fvcore's count, else the smallest, flagged.

    `order_flops` ranks the candidates; where it is not the fvcore count itself (DeiT's closed
    form), the count is still what decides, stepping down while it is over the budget.
    """
    index = _largest_within(candidates, budget, order_flops)
    while index is not None and _spec(candidates[index], img_size).flops > budget:
        index = index - 1 if index > 0 else None
    if index is not None:
        return _spec(candidates[index], img_size)
    spec = _spec(candidates[0], img_size)
    flag = (f"no {spec.family} configuration fits {budget / 1e9:g} GFLOPs at {img_size} px; "
            f"the smallest ({spec.flops / 1e9:.4g} GFLOPs) is used")
    return replace(spec, over_budget=True, note="; ".join(filter(None, (spec.note, flag))))


def baseline_models(gflops: float, img_size: int, num_classes: int) -> list[BaselineSpec]:
    """One configuration per family (deit, crossvit, t2t) with the most fvcore FLOPs within `gflops`.

    FLOPs are counted for square images of img_size px; a family with nothing within the budget
    gives its smallest configuration with over_budget=True and a note saying so.
    """
    if not gflops > 0:
        raise BaselineError(f"the FLOPs budget must be positive, got {gflops} GFLOPs")
    if num_classes < 1:
        raise BaselineError(f"num_classes must be at least 1, got {num_classes}")
    budget = gflops * 1e9
    deit = _deit_candidates(img_size, num_classes)
    closed_form = dict(deit)
    return [
        _pick([c for c, _ in deit], budget, img_size, closed_form.__getitem__),
        _pick(_crossvit_candidates(img_size, num_classes), budget, img_size,
              lambda c: _measure(c.timm_name, c.kwargs, img_size)[1]),
        _pick(_t2t_candidates(img_size, num_classes), budget, img_size,
              lambda c: _measure(c.timm_name, c.kwargs, img_size)[1]),
    ]


def build_baseline(spec: BaselineSpec, drop_path_rate: float = 0.0) -> nn.Module:
    """The model `spec` describes, freshly initialized (pretrained=False: nothing is downloaded)."""
    model = timm.create_model(spec.timm_name, pretrained=False, drop_path_rate=drop_path_rate, **spec.kwargs)
    # timm keeps the weights tag's input_size (224, 240) whatever img_size the model is built for;
    # data transforms resolved from the model must give the data size every model here trains on.
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, spec.img_size, spec.img_size)}
    return model
