"""Inception Transformer (iFormer, NeurIPS 2022) with any per-block frequency ramp.

Paper: "Inception Transformer", Si et al., NeurIPS 2022 (arXiv 2205.12956).

Each block splits its C input channels: the first C_h go to a high-frequency mixer (a max-pool
branch and a depthwise-conv branch), the last C_l = C - C_h to a low-frequency mixer (attention
over average-pooled tokens). C_h/C per block is the "frequency ramp"; the paper set it by hand,
here it is an argument. With the hand-set ramp the model is the official one: the same
state_dict keys and shapes, parameter count and fvcore FLOPs (tests/test_parity.py).

Beyond the official code: any ratio in [0, 1] (pure-conv and pure-attention blocks), non-square
and odd input sizes, interpolated position embeddings, and a fused attention path
(F.scaled_dot_product_attention; `set_fused_attn(model, False)` restores explicit matmuls).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_, use_fused_attn
from timm.models import register_model

from ..architecture import VARIANTS, Architecture
from ..ramp import ContinuousRamp, RampSchedule, resolve_ramp
from ._entrypoints import model_kwargs

__all__ = ["InceptionTransformer", "build_iformer", "set_fused_attn"]

LAYER_NORM_EPS = 1e-6
LAYER_SCALE_STAGES = (2, 3)  # the official model has layer scale in stages 3-4 only


def _conv_out(size: int) -> int:
    """Output size of the stride-2, pad-1, 3x3 convs of the stem and downsampling layers."""
    return (size - 1) // 2 + 1


def stage_sizes(img_size: int | tuple[int, int]) -> list[tuple[int, int]]:
    """Feature-map size (H, W) of each of the four stages for an input of `img_size`."""
    h, w = to_2tuple(img_size)
    h, w = _conv_out(_conv_out(h)), _conv_out(_conv_out(w))
    sizes = [(h, w)]
    for _ in range(3):
        h, w = _conv_out(h), _conv_out(w)
        sizes.append((h, w))
    return sizes


class HighFrequencyMixer(nn.Module):
    """Max-pool and depthwise-conv branches on C_h channels; each branch doubles its C_h/2 input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        # conv branch (first half): 1x1 expand, 3x3 depthwise, GELU
        self.conv1 = nn.Conv2d(half, dim, kernel_size=1, bias=False)
        self.proj1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        # max-pool branch (second half): 3x3 max-pool, 1x1 expand, GELU
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.proj2 = nn.Conv2d(half, dim, kernel_size=1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cx, px = x.chunk(2, dim=1)
        cx = self.act(self.proj1(self.conv1(cx)))
        px = self.act(self.proj2(self.maxpool(px)))
        return torch.cat((cx, px), dim=1)


class LowFrequencyMixer(nn.Module):
    """Multi-head self-attention over tokens average-pooled by `pool_size`, upsampled back.

    There is no output projection: the InceptionMixer's fusion does that job.
    """

    def __init__(self, dim: int, head_dim: int = 32, pool_size: int = 1, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.pool_size = pool_size
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attn_drop = attn_drop
        # ceil_mode + count_include_pad=False: odd maps pool their last row/column on its own
        # rather than dropping it, so the size round-trips for any input.
        self.pool = (nn.AvgPool2d(pool_size, stride=pool_size, ceil_mode=True, count_include_pad=False)
                     if pool_size > 1 else nn.Identity())
        self.fused_attn = use_fused_attn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = self.pool(x)
        h, w = x.shape[-2:]
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        qkv = self.qkv(tokens).reshape(B, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        drop = self.attn_drop if self.training else 0.0
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = F.dropout(attn.softmax(dim=-1), p=drop)
            x = attn @ v
        # channel index = head * head_dim + d, as in the official model
        x = x.transpose(2, 3).reshape(B, C, h, w)
        if self.pool_size > 1:
            x = F.interpolate(x, size=(H, W), mode="nearest")
        return x


class InceptionMixer(nn.Module):
    """Splits channels (high first, then low), mixes each part, fuses, projects back to C.

    The fused width is 2*C_h + C_l because the high-frequency branches double their channels.
    Works on channels-last (B, H, W, C) tensors like the rest of the block.
    """

    def __init__(self, dim: int, high_dim: int, head_dim: int = 32, pool_size: int = 1,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.high_dim = high_dim
        low_dim = dim - high_dim
        self.high_mixer = HighFrequencyMixer(high_dim) if high_dim else None
        self.low_mixer = LowFrequencyMixer(low_dim, head_dim, pool_size, attn_drop) if low_dim else None
        fused = 2 * high_dim + low_dim
        self.conv_fuse = nn.Conv2d(fused, fused, kernel_size=3, padding=1, groups=fused, bias=False)
        self.proj = nn.Conv2d(fused, dim, kernel_size=1)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        parts = []
        if self.high_mixer is not None:
            parts.append(self.high_mixer(x[:, :self.high_dim]))
        if self.low_mixer is not None:
            parts.append(self.low_mixer(x[:, self.high_dim:]))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        x = x + self.conv_fuse(x)
        x = self.proj_drop(self.proj(x))
        return x.permute(0, 2, 3, 1)


class Block(nn.Module):
    """Pre-norm residual block: InceptionMixer, then MLP; optional per-channel layer scale."""

    def __init__(self, dim: int, high_dim: int, head_dim: int = 32, mlp_ratio: float = 4.0,
                 pool_size: int = 1, drop_path: float = 0.0, layer_scale_init: float | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = InceptionMixer(dim, high_dim, head_dim, pool_size)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if layer_scale_init is not None:
            self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
            self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        else:
            self.layer_scale_1 = self.layer_scale_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.norm1(x))
        x = x + self.drop_path(y if self.layer_scale_1 is None else self.layer_scale_1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.layer_scale_2 is None else self.layer_scale_2 * y)


class Stage(nn.Sequential):
    """The blocks of one stage, each with its own C_h (the ramp within the stage)."""

    def __init__(self, dim: int, high_dims: Sequence[int], head_dim: int, mlp_ratio: float, pool_size: int,
                 drop_path_rates: Sequence[float], layer_scale_init: float | None) -> None:
        super().__init__(*[
            Block(dim, high_dim, head_dim, mlp_ratio, pool_size, dpr, layer_scale_init)
            for high_dim, dpr in zip(high_dims, drop_path_rates)])


class Stem(nn.Module):
    """Two stride-2 3x3 convs (output stride 4) with BatchNorm, GELU between; returns channels-last."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(in_chans, dim // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = nn.BatchNorm2d(dim // 2)
        self.act = nn.GELU()
        self.proj2 = nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm2(self.proj2(self.act(self.norm1(self.proj1(x)))))
        return x.permute(0, 2, 3, 1)


class Downsample(nn.Module):
    """Stride-2 3x3 conv + BatchNorm between stages, channels-last in and out."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


class InceptionTransformer(nn.Module):
    """Four stages of Blocks, a learned position embedding per stage, LayerNorm, mean, linear head.

    Attribute names (patch_embed, patch_embed2-4, pos_embed1-4, blocks1-4, norm, head) follow the
    official checkpoints so their state_dicts load with strict=True.
    """

    def __init__(self, arch: Architecture, ramp: RampSchedule, img_size: int | tuple[int, int] = 224,
                 in_chans: int = 3, num_classes: int = 1000, drop_path_rate: float = 0.0,
                 layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.architecture, self.ramp = arch, ramp
        self.num_classes = num_classes
        self.num_features = arch.embed_dims[-1]
        self.img_size = to_2tuple(img_size)
        high_dims = [c_h for c_h, _ in ramp.channels(arch)]
        # drop-path rate rises linearly from 0 over all blocks (the official torch.linspace schedule)
        dpr = [drop_path_rate * b / max(arch.num_blocks - 1, 1) for b in range(arch.num_blocks)]
        first = 0
        for i, (depth, dim) in enumerate(zip(arch.depths, arch.embed_dims)):
            downsample = Stem(in_chans, dim) if i == 0 else Downsample(arch.embed_dims[i - 1], dim)
            self.add_module("patch_embed" if i == 0 else f"patch_embed{i + 1}", downsample)
            h, w = stage_sizes(self.img_size)[i]
            self.register_parameter(f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, h, w, dim)))
            stage = Stage(dim, high_dims[first:first + depth], arch.head_dim, arch.mlp_ratio, arch.pool_sizes[i],
                          dpr[first:first + depth], layer_scale_init if i in LAYER_SCALE_STAGES else None)
            self.add_module(f"blocks{i + 1}", stage)
            first += depth
        self.norm = nn.LayerNorm(self.num_features, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        for i in range(len(arch.depths)):
            trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _pos_embed(self, i: int, x: torch.Tensor) -> torch.Tensor:
        pos = getattr(self, f"pos_embed{i + 1}")
        if pos.shape[1:3] != x.shape[1:3]:
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bilinear").permute(0, 2, 3, 1)
        return x + pos

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → channels-last features of the last stage, normalized."""
        for i in range(len(self.architecture.depths)):
            x = getattr(self, "patch_embed" if i == 0 else f"patch_embed{i + 1}")(x)
            x = getattr(self, f"blocks{i + 1}")(self._pos_embed(i, x))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(1, 2))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def set_fused_attn(model: nn.Module, enable: bool) -> None:
    """Switch every LowFrequencyMixer between F.scaled_dot_product_attention and explicit matmuls."""
    for m in model.modules():
        if isinstance(m, LowFrequencyMixer):
            m.fused_attn = enable


def build_iformer(variant: str | None = None, *, depths: Sequence[int] | None = None,
                  embed_dims: Sequence[int] | None = None,
                  ramp: RampSchedule | ContinuousRamp | Sequence[float] | None = None,
                  head_dim: int = 32, mlp_ratio: float = 4.0, pool_sizes: Sequence[int] = (2, 2, 1, 1),
                  img_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000,
                  drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6) -> InceptionTransformer:
    """Build an iFormer from a variant (nano/small/base/large) or explicit depths/embed_dims, and a ramp.

    `ramp` is one C_h/C per block (all stages in order), a RampSchedule or ContinuousRamp;
    None means the hand-set ramp (the paper's for S/B/L, the paper-style rule otherwise).
    """
    arch = Architecture.resolve(variant, depths=depths, embed_dims=embed_dims, head_dim=head_dim,
                                mlp_ratio=mlp_ratio, pool_sizes=pool_sizes)
    model = InceptionTransformer(arch, resolve_ramp(ramp, arch), img_size=img_size, in_chans=in_chans,
                                 num_classes=num_classes, drop_path_rate=drop_path_rate,
                                 layer_scale_init=layer_scale_init)
    model.pretrained_cfg = _cfg(img_size, num_classes, in_chans)
    return model


def _cfg(img_size: int | tuple[int, int], num_classes: int, in_chans: int) -> dict[str, Any]:
    # The official evaluation transform (reference §5); read by timm.data.resolve_model_data_config.
    return {"input_size": (in_chans, *to_2tuple(img_size)), "num_classes": num_classes,
            "crop_pct": 0.9, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj1", "classifier": "head"}


def _create(variant: str, pretrained: bool, default_img_size: int | None = None,
            **kwargs: Any) -> InceptionTransformer:
    kwargs = model_kwargs("Inception Transformer", pretrained, kwargs)
    kwargs.setdefault("img_size", default_img_size or VARIANTS[variant].img_size)
    return build_iformer(variant, **kwargs)


@register_model
def inception_transformer_nano(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    return _create("nano", pretrained, **kwargs)


@register_model
def inception_transformer_small(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    return _create("small", pretrained, **kwargs)


@register_model
def inception_transformer_base(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    return _create("base", pretrained, **kwargs)


@register_model
def inception_transformer_large(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    return _create("large", pretrained, **kwargs)


@register_model
def inception_transformer_small_384(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    return _create("small", pretrained, 384, **kwargs)


@register_model
def inception_transformer_base_384(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    return _create("base", pretrained, 384, **kwargs)


@register_model
def inception_transformer_large_384(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    return _create("large", pretrained, 384, **kwargs)
