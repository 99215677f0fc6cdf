"""FLOPs the way the paper counts them: fvcore, one multiply-add = one FLOP.

Two counters that must agree:
- `count_flops` traces a real model with fvcore (plus a handle for scaled_dot_product_attention,
  which fvcore would count as zero), and `flop_report` also says which ops fvcore skipped.
- `FlopsModel` / `estimate_flops` is a closed form of the same count from the architecture and the
  ramp alone, with no model and no tracing, for checking a search's budget millions of times.

What fvcore counts, and so what the closed form counts (batch 1, eval mode): convolutions and
linear layers (weights only, not bias adds), attention matmuls, LayerNorm 5/element, BatchNorm
2/element, nearest upsampling 1/output element, bilinear position-embedding interpolation
4/output element. It does not count GELU, adds, multiplies, softmax, max/avg pooling or means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .architecture import Architecture
from .models.inception_transformer import LAYER_SCALE_STAGES, stage_sizes
from .ramp import ContinuousRamp, RampSchedule, resolve_ramp

__all__ = ["FlopReport", "FlopsModel", "count_flops", "estimate_flops", "flop_report"]


def _sdpa_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for aten::scaled_dot_product_attention: Q·K^T plus attn·V multiply-adds."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, length, dim = q
    return math.prod(batch) * length * k[-2] * (dim + v[-1])


@dataclass(frozen=True)
class FlopReport:
    total: int
    by_operator: dict[str, int]
    by_module: dict[str, int]
    unsupported: dict[str, int]  # op name -> number of calls fvcore counted as zero


def flop_report(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> FlopReport:
    """Trace `model` once with fvcore on a (1, in_chans, H, W) input, in eval mode."""
    from fvcore.nn import FlopCountAnalysis

    model = getattr(model, "_orig_mod", model)  # fvcore cannot trace torch.compile'd modules
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, h, w, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = {name: n for name, n in analysis.by_module().items() if name and "." not in name}
        return FlopReport(total=int(analysis.total()), by_operator=dict(analysis.by_operator()),
                          by_module=by_module, unsupported=dict(analysis.unsupported_ops()))
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, img_size: int | tuple[int, int] = 224) -> int:
    """fvcore FLOPs (multiply-adds) of one image through `model`."""
    return flop_report(model, img_size).total


def block_flops(width: int, high: int, size: tuple[int, int], pool: int, head_dim: int, mlp_ratio: float) -> int:
    """FLOPs of one Block with `high` = C_h channels on an H x W map (fvcore's convention)."""
    h, w = size
    n = h * w
    low = width - high
    flops = 2 * 5 * n * width  # norm1, norm2
    if high:
        flops += n * high * high + 9 * n * high  # two 1x1 convs C_h/2 -> C_h, 3x3 depthwise on C_h
    if low:
        tokens = math.ceil(h / pool) * math.ceil(w / pool)
        flops += 3 * tokens * low * low + 2 * tokens * tokens * low  # qkv, q·k^T and attn·v
        if pool > 1:
            flops += n * low  # nearest upsampling back to H x W
    fused = 2 * high + low
    flops += 9 * n * fused + n * fused * width  # depthwise fuse, 1x1 projection
    flops += 2 * n * width * int(width * mlp_ratio)  # MLP
    return flops


def block_params(width: int, high: int, mlp_ratio: float, layer_scale: bool) -> int:
    """Parameters of one Block with `high` = C_h channels."""
    low = width - high
    hidden = int(width * mlp_ratio)
    params = 4 * width + (2 * width if layer_scale else 0)  # two LayerNorms, layer scales
    if high:
        params += high * high + 10 * high  # two 1x1 convs C_h/2 -> C_h (one with bias), 3x3 depthwise
    if low:
        params += 3 * low * low + 3 * low  # qkv with bias
    fused = 2 * high + low
    params += 9 * fused + fused * width + width  # depthwise fuse, 1x1 projection with bias
    return params + 2 * width * hidden + hidden + width  # MLP


class FlopsModel:
    """Closed-form fvcore FLOPs (and parameters) of every ramp of one architecture at one input size.

    Per-block costs are tabulated once, so a schedule's FLOPs is a sum of table entries.
    """

    def __init__(self, arch: Architecture, img_size: int | tuple[int, int] = 224,
                 num_classes: int = 1000, in_chans: int = 3) -> None:
        self.arch = arch
        sizes = stage_sizes(img_size)
        self.base = self._outside_blocks(arch, img_size, sizes, num_classes, in_chans)
        units = [w // arch.head_dim for w in arch.block_widths]
        # table[b, k]: FLOPs of block b with k high-frequency heads (k <= units[b]; padded with 0)
        self.table = np.zeros((arch.num_blocks, max(units) + 1), dtype=np.int64)
        for b, (stage, width) in enumerate(zip(arch.block_stages, arch.block_widths)):
            for k in range(units[b] + 1):
                self.table[b, k] = block_flops(width, k * arch.head_dim, sizes[stage], arch.pool_sizes[stage],
                                               arch.head_dim, arch.mlp_ratio)
        self.params_base = self._params_outside_blocks(arch, sizes, num_classes, in_chans)
        self.params_rows = [  # params_rows[b][k]: parameters of block b with k heads
            [block_params(width, k * arch.head_dim, arch.mlp_ratio, stage in LAYER_SCALE_STAGES)
             for k in range(units[b] + 1)]
            for b, (stage, width) in enumerate(zip(arch.block_stages, arch.block_widths))]
        self._rows = np.arange(arch.num_blocks)
        self.rows = [list(map(int, row)) for row in self.table]  # rows[b][k]: as Python ints, for speed
        self.min = self.base + int(sum(min(row[:u + 1]) for row, u in zip(self.rows, units)))
        self.max = self.base + int(sum(max(row[:u + 1]) for row, u in zip(self.rows, units)))

    @staticmethod
    def _outside_blocks(arch: Architecture, img_size: int | tuple[int, int], sizes: list[tuple[int, int]],
                        num_classes: int, in_chans: int) -> int:
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        h1, w1 = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        c0 = arch.embed_dims[0]
        flops = h1 * w1 * (c0 // 2) * (in_chans * 9 + 2)  # stem conv 1 + BatchNorm
        n0 = sizes[0][0] * sizes[0][1]
        flops += n0 * c0 * ((c0 // 2) * 9 + 2)  # stem conv 2 + BatchNorm
        for s in range(1, len(sizes)):
            n = sizes[s][0] * sizes[s][1]
            flops += n * arch.embed_dims[s] * (arch.embed_dims[s - 1] * 9 + 2)  # downsample conv + BN
        n_last, c_last = sizes[-1][0] * sizes[-1][1], arch.embed_dims[-1]
        return flops + 5 * n_last * c_last + c_last * max(num_classes, 0)  # final norm, head

    @staticmethod
    def _params_outside_blocks(arch: Architecture, sizes: list[tuple[int, int]], num_classes: int,
                               in_chans: int) -> int:
        c0 = arch.embed_dims[0]
        params = (c0 // 2) * (in_chans * 9 + 3) + c0 * ((c0 // 2) * 9 + 3)  # stem convs (+bias) + BN affine
        for s in range(1, len(sizes)):
            params += arch.embed_dims[s] * (arch.embed_dims[s - 1] * 9 + 3)  # downsample conv + BN affine
        params += sum(h * w * c for (h, w), c in zip(sizes, arch.embed_dims))  # position embeddings
        c_last = arch.embed_dims[-1]
        return params + 2 * c_last + (c_last + 1) * max(num_classes, 0)  # final norm, head

    def params_of_heads(self, high_heads: Sequence[int]) -> int:
        """Parameter count for per-block high-frequency head counts."""
        return self.params_base + sum(row[k] for row, k in zip(self.params_rows, high_heads))

    def of_heads(self, high_heads: Sequence[int]) -> int:
        """FLOPs for per-block high-frequency head counts (k = C_h / head_dim)."""
        return self.base + sum(row[k] for row, k in zip(self.rows, high_heads))

    def of(self, ramp: RampSchedule) -> int:
        return self.of_heads(ramp.high_heads(self.arch))

    def of_many(self, high_heads: np.ndarray) -> np.ndarray:
        """Vectorised: an (n_schedules, n_blocks) array of head counts → n FLOPs counts."""
        return self.base + self.table[self._rows, np.asarray(high_heads)].sum(axis=1)

    def per_block(self, ramp: RampSchedule) -> list[int]:
        return [row[k] for row, k in zip(self.rows, ramp.high_heads(self.arch))]


@lru_cache(maxsize=256)
def flops_model(arch: Architecture, img_size: int | tuple[int, int] = 224, num_classes: int = 1000,
                in_chans: int = 3) -> FlopsModel:
    """A cached FlopsModel: building the table is the only non-trivial cost."""
    return FlopsModel(arch, img_size, num_classes, in_chans)


def estimate_flops(variant: str | None = None, *, depths: Sequence[int] | None = None,
                   embed_dims: Sequence[int] | None = None,
                   ramp: RampSchedule | ContinuousRamp | Sequence[float] | None = None, head_dim: int = 32,
                   mlp_ratio: float = 4.0, pool_sizes: Sequence[int] = (2, 2, 1, 1),
                   img_size: int | tuple[int, int] = 224, num_classes: int = 1000, in_chans: int = 3) -> int:
    """fvcore FLOPs of `build_iformer(...)` with the same keywords, without building or tracing it."""
    arch = Architecture.resolve(variant, depths=depths, embed_dims=embed_dims, head_dim=head_dim,
                                mlp_ratio=mlp_ratio, pool_sizes=pool_sizes)
    model = flops_model(arch, img_size, num_classes, in_chans)
    if ramp is None:
        ramp = RampSchedule.handset(arch)
    elif not isinstance(ramp, RampSchedule):
        ramp = resolve_ramp(ramp, arch)
    return model.of(ramp)  # validates the ramp
