"""Inception Transformer (iFormer, NeurIPS 2022) with any per-block frequency ramp, as a timm model family.

Paper: "Inception Transformer", Si et al., NeurIPS 2022 (arXiv 2205.12956).

Each block splits its C input channels: the first C_h go to a high-frequency mixer (a max-pool
branch and a depthwise-conv branch), the last C_l = C - C_h to a low-frequency mixer (attention
over average-pooled tokens). C_h/C per block is the "frequency ramp"; the paper set it by hand,
here it is an argument. With the hand-set ramp the model is the official one: the same
state_dict keys and shapes, parameter count and fvcore FLOPs (tests/test_parity.py).

Beyond the official code: any ratio in [0, 1] (pure-conv and pure-attention blocks), non-square
and odd input sizes, interpolated position embeddings, and a fused attention path
(F.scaled_dot_product_attention; `set_fused_attn(model, False)` restores explicit matmuls).

timm: the `inception_transformer_*` entrypoints and `build_iformer` all build through
`build_model_with_cfg`. The constructor takes plain values only (the ramp as a list of floats), and
records the resolved architecture and ramp as timm's reconstruction arguments, so a
`timm.models.save_for_hf` export reloads as the same model with
`timm.create_model("local-dir:DIR", pretrained=True)` (timm.create_model also records its own keyword
arguments as given: hand it the ramp as a list of floats, not a RampSchedule, for a model to export;
`build_iformer` converts any ramp form itself). No weights are hosted: pretrained=True needs a source
(`pretrained_cfg_overlay=dict(file=...)`, a local-dir export), and `checkpoint_filter_fn` loads official
checkpoints (wrapped, EMA, DDP-prefixed, 224-px position embeddings into 384-px models).
`no_weight_decay()` names pos_embed1-4 (the official one named parameters that do not exist, so the
official trainings decayed the position embeddings). The body is
channels-last (B, H, W, C): `forward_features` returns that layout (`output_fmt = "NHWC"`), while
`forward_intermediates` and `features_only=True` give NCHW maps of the four stages (strides 4-32).
`features_only` uses timm's FeatureGetterNet (forward_intermediates): the feature classes that walk
the module list ("list", "dict") would skip the position embeddings, which the model adds in its
forward, not in a module; feature_cls="fx" works but returns the blocks' channels-last outputs.
TorchScript and FX tracing both work: stages are spelled out (not looked up by name) so TorchScript
compiles them, and the position-embedding resize, which compares shapes, is a leaf for every FX tracer
(`torch.fx.wrap`). Annotations are evaluated (no `from __future__ import annotations`), so the code FX
generates names real types and TorchScript compiles an FX-traced model too.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, checkpoint_seq, clean_state_dict, generate_default_cfgs, register_model

from ..architecture import NUM_STAGES, VARIANTS, Architecture
from ..ramp import ContinuousRamp, RampSchedule, resolve_ramp
from ._entrypoints import entrypoint_cfg, feature_take_indices, reset_head, update_model_args

__all__ = ["InceptionTransformer", "build_iformer", "checkpoint_filter_fn", "set_fused_attn"]

LAYER_NORM_EPS = 1e-6
LAYER_SCALE_STAGES = (2, 3)  # the official model has layer scale in stages 3-4 only
GLOBAL_POOLS = ("avg", "")  # mean over the last stage's positions, or none (forward returns the map)
FINETUNE_SIZE = 384  # S/B/L were also released fine-tuned at 384 px (the `_384` entrypoints)
# timm training checkpoints keep the model's weights under these keys; EMA first, as timm's own loader prefers it
CHECKPOINT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def _conv_out(size: int) -> int:
    """Output size of the stride-2, pad-1, 3x3 convs of the stem and downsampling layers."""
    return (size - 1) // 2 + 1


def stage_sizes(img_size: int | tuple[int, int]) -> list[tuple[int, int]]:
    """Feature-map size (H, W) of each of the four stages for an input of `img_size`."""
    h, w = to_2tuple(img_size)
    h, w = _conv_out(_conv_out(h)), _conv_out(_conv_out(w))
    sizes = [(h, w)]
    for _ in range(NUM_STAGES - 1):
        h, w = _conv_out(h), _conv_out(w)
        sizes.append((h, w))
    return sizes


def stage_names(index: int) -> tuple[str, str, str]:
    """Attribute names of stage `index`'s downsampling (the stem for 0), position embedding and blocks."""
    return ("patch_embed" if index == 0 else f"patch_embed{index + 1}", f"pos_embed{index + 1}",
            f"blocks{index + 1}")


def resample_pos_embed(pos: torch.Tensor, size: List[int]) -> torch.Tensor:
    """A (1, H, W, C) position embedding resized bilinearly (align_corners=False) to (1, size[0], size[1], C)."""
    resized = F.interpolate(pos.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1)


@torch.fx.wrap  # compares shapes: a leaf for every FX tracer, not traced through
def add_pos_embed(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (B, H, W, C) plus its stage's position embedding, resized to x's grid when the sizes differ."""
    if pos.shape[1:3] != x.shape[1:3]:
        pos = resample_pos_embed(pos, x.shape[1:3])
    return x + pos


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
        parts: List[torch.Tensor] = []
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
    """The blocks of one stage, each with its own C_h (the ramp within the stage).

    With `grad_checkpointing` set, a training forward keeps only each Block's input for backward and
    recomputes the rest (timm's checkpoint_seq; the RNG state is replayed, so drop path matches).
    """

    def __init__(self, dim: int, high_dims: Sequence[int], head_dim: int, mlp_ratio: float, pool_size: int,
                 drop_path_rates: Sequence[float], layer_scale_init: float | None) -> None:
        super().__init__(*[
            Block(dim, high_dim, head_dim, mlp_ratio, pool_size, dpr, layer_scale_init)
            for high_dim, dpr in zip(high_dims, drop_path_rates)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint_seq(self, x)
        for block in self:
            x = block(x)
        return x


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


def named_variant(arch: Architecture) -> str | None:
    """The VARIANTS name whose architecture `arch` is (equal in every field), if any."""
    return next((name for name in VARIANTS if Architecture.resolve(name) == arch), None)


class InceptionTransformer(nn.Module):
    """Four stages of Blocks, a learned position embedding per stage, LayerNorm, mean, linear head.

    Attribute names (patch_embed, patch_embed2-4, pos_embed1-4, blocks1-4, norm, head) follow the
    official checkpoints so their state_dicts load with strict=True. Every argument is a plain value;
    `ramp` is one C_h/C per block (all stages in order), None for the hand-set ramp. The resolved
    `architecture` (an Architecture) and `ramp` (a RampSchedule) are attributes.
    """

    __jit_ignored_attributes__ = ["architecture", "ramp"]  # Python-only descriptions, not used in forward

    def __init__(self, depths: Sequence[int] = (3, 3, 9, 3), embed_dims: Sequence[int] = (96, 192, 320, 384),
                 ramp: Optional[Sequence[float]] = None, head_dim: int = 32, mlp_ratio: float = 4.0,
                 pool_sizes: Sequence[int] = (2, 2, 1, 1), img_size: Union[int, Tuple[int, int]] = 224,
                 in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool {global_pool!r}: choose one of {GLOBAL_POOLS}")
        arch = Architecture.resolve(None, depths=depths, embed_dims=embed_dims, head_dim=head_dim,
                                    mlp_ratio=mlp_ratio, pool_sizes=pool_sizes)
        arch = Architecture.resolve(named_variant(arch), **arch.build_kwargs())  # labelled when it is a variant
        self.architecture, self.ramp = arch, resolve_ramp(ramp, arch)
        self.num_classes, self.in_chans, self.global_pool = num_classes, in_chans, global_pool
        self.num_features = self.head_hidden_size = arch.embed_dims[-1]
        self.img_size = to_2tuple(img_size)
        self.num_stages = NUM_STAGES
        self.output_fmt = "NHWC"
        high_dims = [c_h for c_h, _ in self.ramp.channels(arch)]
        # drop-path rate rises linearly from 0 over all blocks (the official torch.linspace schedule)
        dpr = [drop_path_rate * b / max(arch.num_blocks - 1, 1) for b in range(arch.num_blocks)]
        self.feature_info = []
        first = 0
        for i, (depth, dim, (h, w)) in enumerate(zip(arch.depths, arch.embed_dims, stage_sizes(self.img_size))):
            downsample_name, pos_name, blocks_name = stage_names(i)
            self.add_module(downsample_name, Stem(in_chans, dim) if i == 0 else Downsample(arch.embed_dims[i - 1], dim))
            self.register_parameter(pos_name, nn.Parameter(torch.zeros(1, h, w, dim)))
            self.add_module(blocks_name, Stage(
                dim, high_dims[first:first + depth], arch.head_dim, arch.mlp_ratio, arch.pool_sizes[i],
                dpr[first:first + depth], layer_scale_init if i in LAYER_SCALE_STAGES else None))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=blocks_name))
            first += depth
        self.norm = nn.LayerNorm(self.num_features, eps=LAYER_NORM_EPS)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        for i in range(NUM_STAGES):
            trunc_normal_(getattr(self, stage_names(i)[1]), std=0.02)
        # timm's reconstruction arguments (save_for_hf writes them to config.json): plain values, the
        # ramp resolved, so a reload is this very architecture whatever the hand-set rule becomes.
        update_model_args(self, depths=list(arch.depths), embed_dims=list(arch.embed_dims),
                          ramp=list(self.ramp.ratios), head_dim=arch.head_dim, mlp_ratio=arch.mlp_ratio,
                          pool_sizes=list(arch.pool_sizes), img_size=list(self.img_size), in_chans=in_chans,
                          num_classes=num_classes, global_pool=global_pool, layer_scale_init=layer_scale_init)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """The position embeddings (the official code named nonexistent parameters here, so it decayed them)."""
        return {name for name, _ in self.named_parameters() if name.startswith("pos_embed")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups by depth for layer-wise lr decay: stem, then each stage's downsampling and blocks."""
        return dict(
            stem=r"^patch_embed\.|^pos_embed1$",
            blocks=r"^(?:patch_embed|pos_embed|blocks)(\d+)" if coarse else [
                (r"^(?:patch_embed|pos_embed)(\d+)", (0,)),  # a stage's downsampling joins its first block
                (r"^blocks(\d+)\.(\d+)", None),
                (r"^norm\.", (99999,)),
            ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for i in range(self.num_stages):
            getattr(self, stage_names(i)[2]).grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head for `num_classes` (0: none); `global_pool` "avg" or "" (no pooling) if given."""
        reset_head(self, num_classes, global_pool, GLOBAL_POOLS)

    def _stage(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Stage `index`: its downsampling (the stem for 0), position embedding and blocks.

        Spelled out per stage (not looked up by name) so TorchScript compiles it; hasattr, resolved when
        compiling, leaves out the stages prune_intermediate_layers removed.
        """
        if index == 0:
            return self.blocks1(add_pos_embed(self.patch_embed(x), self.pos_embed1))
        if hasattr(self, "blocks2") and index == 1:
            return self.blocks2(add_pos_embed(self.patch_embed2(x), self.pos_embed2))
        if hasattr(self, "blocks3") and index == 2:
            return self.blocks3(add_pos_embed(self.patch_embed3(x), self.pos_embed3))
        if hasattr(self, "blocks4") and index == 3:
            return self.blocks4(add_pos_embed(self.patch_embed4(x), self.pos_embed4))
        raise IndexError(f"stage {index} does not exist (pruned?)")

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False,
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The outputs of the stages in `indices` (int: the last n; None: all), and the final features.

        Intermediates are NCHW (or NHWC with output_fmt="NHWC"); `norm` applies the final norm to the last
        stage's; with `stop_early` the stages after the last one taken are not run. The final features are
        forward_features' (channels-last, normalized) when the last stage ran.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt {output_fmt!r}: choose NCHW or NHWC")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if stop_early else self.num_stages - 1
        intermediates: List[torch.Tensor] = []
        for i in range(last + 1):
            x = self._stage(x, i)
            if i in take_indices:
                y = self.norm(x) if norm and i == self.num_stages - 1 else x
                intermediates.append(y.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        if last == self.num_stages - 1:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Remove the stages after the last of `indices` (and the final norm / head); returns the indices kept."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        prune_end = max_index < self.num_stages - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # sized for (and only applied to) the last stage
        for i in range(max_index + 1, self.num_stages):
            for name in stage_names(i):
                delattr(self, name)
        self.num_stages = max_index + 1
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → channels-last features of the last stage, normalized."""
        for i in range(self.num_stages):
            x = self._stage(x, i)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def set_fused_attn(model: nn.Module, enable: bool) -> None:
    """Switch every LowFrequencyMixer between F.scaled_dot_product_attention and explicit matmuls."""
    for m in model.modules():
        if isinstance(m, LowFrequencyMixer):
            m.fused_attn = enable


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: InceptionTransformer) -> Dict[str, Any]:
    """An iFormer checkpoint as published → a state_dict for `model` (timm's pretrained_filter_fn).

    Takes plain state_dicts and wrapped ones ({"model": ...}, {"state_dict": ...}, timm train.py
    checkpoints); when a checkpoint holds EMA weights ("state_dict_ema" / "model_ema") those are
    preferred over the raw ones. Strips DDP / torch.compile prefixes ("module.", "_orig_mod.").
    Position embeddings of another grid (the official `_384` checkpoints hold the 224-px ones) are
    resampled bilinearly to the model's. A head of another class count is left to timm's loader,
    which drops it by the pretrained cfg's "classifier".
    """
    wrapped = next((state_dict[k] for k in CHECKPOINT_KEYS if isinstance(state_dict.get(k), Mapping)), None)
    while wrapped is not None:
        state_dict = wrapped
        wrapped = next((state_dict[k] for k in CHECKPOINT_KEYS if isinstance(state_dict.get(k), Mapping)), None)
    own = dict(model.named_parameters())
    out = {}
    for key, value in clean_state_dict(dict(state_dict)).items():
        target = own.get(key)
        if key.startswith("pos_embed") and target is not None and value.shape[1:3] != target.shape[1:3]:
            value = resample_pos_embed(value.float(), list(target.shape[1:3])).to(value.dtype)
        out[key] = value
    return out


def _cfg(img_size: int = 224, crop_pct: float = 0.9, **kwargs: Any) -> Dict[str, Any]:
    """Pretrained cfg: the official evaluation transform (reference §5); no weights are hosted."""
    return {
        "num_classes": 1000, "input_size": (3, img_size, img_size), "pool_size": stage_sizes(img_size)[-1],
        "crop_pct": crop_pct, "interpolation": "bicubic", "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj1", "classifier": "head",
        "paper_name": "Inception Transformer", "paper_ids": "arXiv:2205.12956",
        "origin_url": "https://github.com/sail-sg/iFormer",
        "notes": ("no license set: sail-sg/iFormer, which released the official weights, has no license file",),
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "inception_transformer_nano": _cfg(64, origin_url=None, notes=(
        "not from the paper: rampsearch's CPU proxy, for trainings at 64 px; no official weights",)),
    "inception_transformer_small": _cfg(),
    "inception_transformer_base": _cfg(),
    "inception_transformer_large": _cfg(),
    # fine-tuned at 384 px and evaluated without a crop (crop_pct 1.0)
    "inception_transformer_small_384": _cfg(FINETUNE_SIZE, crop_pct=1.0),
    "inception_transformer_base_384": _cfg(FINETUNE_SIZE, crop_pct=1.0),
    "inception_transformer_large_384": _cfg(FINETUNE_SIZE, crop_pct=1.0),
})


def _create_iformer(name: str, pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    cfg = entrypoint_cfg(name, "Inception Transformer", pretrained, kwargs)
    cfg = dataclasses.replace(cfg, pool_size=stage_sizes(kwargs["img_size"])[-1])
    out_indices = kwargs.pop("out_indices", tuple(range(NUM_STAGES)))
    return build_model_with_cfg(InceptionTransformer, name, pretrained, pretrained_cfg=cfg,
                                pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _variant_args(variant: str) -> Dict[str, Any]:
    config = VARIANTS[variant]
    return {"depths": list(config.depths), "embed_dims": list(config.embed_dims)}


def build_iformer(variant: str | None = None, *, depths: Sequence[int] | None = None,
                  embed_dims: Sequence[int] | None = None,
                  ramp: RampSchedule | ContinuousRamp | Sequence[float] | None = None,
                  head_dim: int = 32, mlp_ratio: float = 4.0, pool_sizes: Sequence[int] = (2, 2, 1, 1),
                  img_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000,
                  drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6) -> InceptionTransformer:
    """Build an iFormer from a variant (nano/small/base/large) or explicit depths/embed_dims, and a ramp.

    `ramp` is one C_h/C per block (all stages in order), a RampSchedule or ContinuousRamp;
    None means the hand-set ramp (the paper's for S/B/L, the paper-style rule otherwise).
    Built through the timm entrypoint of the architecture (the `_384` one at 384 px); an architecture
    that is no variant goes through `inception_transformer_nano`'s, overridden like any timm
    entrypoint's arguments (its pretrained cfg then names that entrypoint).
    """
    arch = Architecture.resolve(variant, depths=depths, embed_dims=embed_dims, head_dim=head_dim,
                                mlp_ratio=mlp_ratio, pool_sizes=pool_sizes)
    name = named_variant(arch) or "nano"
    if name != "nano" and to_2tuple(img_size) == (FINETUNE_SIZE, FINETUNE_SIZE):
        name += f"_{FINETUNE_SIZE}"
    return _create_iformer(f"inception_transformer_{name}", **arch.build_kwargs(),
                           ramp=list(resolve_ramp(ramp, arch).ratios), img_size=img_size, in_chans=in_chans,
                           num_classes=num_classes, drop_path_rate=drop_path_rate, layer_scale_init=layer_scale_init)


@register_model
def inception_transformer_nano(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    """Not in the paper: rampsearch's ~3.5M-param CPU proxy (depths 2-2-4-2, widths 64-256) at 64 px."""
    return _create_iformer("inception_transformer_nano", pretrained, **dict(_variant_args("nano"), **kwargs))


@register_model
def inception_transformer_small(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    """iFormer-S at 224 px: depths 3-3-9-3, widths 96-384, 20M params, 4.8 GFLOPs."""
    return _create_iformer("inception_transformer_small", pretrained, **dict(_variant_args("small"), **kwargs))


@register_model
def inception_transformer_base(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    """iFormer-B at 224 px: depths 4-6-14-6, widths 96-512, 48M params, 9.4 GFLOPs."""
    return _create_iformer("inception_transformer_base", pretrained, **dict(_variant_args("base"), **kwargs))


@register_model
def inception_transformer_large(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    """iFormer-L at 224 px: depths 4-6-18-8, widths 96-640, 87M params, 14.0 GFLOPs."""
    return _create_iformer("inception_transformer_large", pretrained, **dict(_variant_args("large"), **kwargs))


@register_model
def inception_transformer_small_384(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    """iFormer-S fine-tuned at 384 px (position embeddings 96², 48², 24², 12²)."""
    return _create_iformer("inception_transformer_small_384", pretrained, **dict(_variant_args("small"), **kwargs))


@register_model
def inception_transformer_base_384(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    """iFormer-B fine-tuned at 384 px."""
    return _create_iformer("inception_transformer_base_384", pretrained, **dict(_variant_args("base"), **kwargs))


@register_model
def inception_transformer_large_384(pretrained: bool = False, **kwargs: Any) -> InceptionTransformer:
    """iFormer-L fine-tuned at 384 px."""
    return _create_iformer("inception_transformer_large_384", pretrained, **dict(_variant_args("large"), **kwargs))
