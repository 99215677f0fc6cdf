"""T2T-ViT with the transformer tokens-to-token module (T2T-ViT_t), a baseline for `--baselines`.

Paper: "Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet", Yuan et al.,
ICCV 2021 (arXiv 2101.11986).

The image becomes tokens in three soft splits (overlapping unfolds: 7x7 stride 4, then 3x3 stride 2
twice, an output stride of 16); between them, a one-head transformer layer over the 64-wide tokens
re-structures them (T2T-ViT_t; the paper's other variant uses Performer layers there). A linear
projection to embed_dim, a class token, a fixed sinusoidal position embedding, pre-norm ViT blocks,
LayerNorm and a linear head on the class token follow.

The official code defines the transformer variant for depths 14/19/24 only; t-7/10/12 here put the
T2T-ViT-7/10/12 backbones behind the same transformer T2T module. At 224 px, fvcore counts 6.11G
FLOPs for t-14 (the paper's 6.1G), 1.75G of them attention matmuls, 1.26G in the first T2T layer
alone (3136 tokens attend to 3136); without the attention it would be 4.35G.

State_dict keys follow the official ones, except that the position embedding, a fixed function of
the token count, is a non-persistent buffer (so it is not counted as a parameter and any img_size
loads any checkpoint).

timm: the `t2t_vit_t_*` entrypoints and `build_t2t_vit` build through `build_model_with_cfg` from
plain constructor values (exported by `timm.models.save_for_hf`, reloaded with `local-dir:`), with a
pretrained cfg per entrypoint (no weights are hosted: pretrained=True needs a file). Like timm's ViT,
`forward_intermediates` / `features_only=True` give single-scale (stride 16) maps of any blocks,
class token dropped. TorchScript and FX tracing (timm's helpers) work, and scripting an FX-traced model
too (annotations are evaluated: no `from __future__ import annotations`). The first learned layer works
on 7x7 unfolded pixel patches (a LayerNorm and a linear, not a conv), so timm cannot adapt a
checkpoint's input layer to another `in_chans`.
"""

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import Mlp, to_2tuple, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, checkpoint, checkpoint_seq, generate_default_cfgs, register_model
from timm.models.vision_transformer import Block

from ._entrypoints import entrypoint_cfg, feature_take_indices, reset_head, update_model_args

__all__ = ["T2T_VIT_CONFIGS", "T2TViT", "T2TViTConfig", "build_t2t_vit", "t2t_grid"]

TOKEN_DIM = 64  # width of the tokens inside the T2T module
# (kernel, stride, padding) of the three soft splits
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))
OUTPUT_STRIDE = 16  # 4 * 2 * 2: the token grid's stride
GLOBAL_POOLS = ("token", "avg", "")  # class token, mean of the patch tokens, or none (all tokens)


@dataclass(frozen=True)
class T2TViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float


T2T_VIT_CONFIGS: dict[str, T2TViTConfig] = {
    "t_7": T2TViTConfig(embed_dim=256, depth=7, num_heads=4, mlp_ratio=2.0),
    "t_10": T2TViTConfig(embed_dim=256, depth=10, num_heads=4, mlp_ratio=2.0),
    "t_12": T2TViTConfig(embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0),
    "t_14": T2TViTConfig(embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0),
}


def _split_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@torch.fx.wrap  # shape arithmetic on the input's size: a leaf for every FX tracer, not traced through
def _grids(h: int, w: int, splits: List[Tuple[int, int, int]]) -> List[Tuple[int, int]]:
    """Token grid (H, W) of an h x w input after each (kernel, stride, padding) soft split."""
    grids: List[Tuple[int, int]] = []
    for kernel, stride, padding in splits:
        h, w = _split_out(h, kernel, stride, padding), _split_out(w, kernel, stride, padding)
        grids.append((h, w))
    return grids


def t2t_grid(img_size: int | tuple[int, int]) -> list[tuple[int, int]]:
    """Token grid (H, W) after each of the three soft splits; the last one is the ViT's."""
    h, w = to_2tuple(img_size)
    return _grids(h, w, list(SOFT_SPLITS))


def sinusoid_position_embedding(num_positions: int, dim: int) -> torch.Tensor:
    """(1, num_positions, dim): sin on even channels, cos on odd, wavelengths 2π·10000^(2i/dim)."""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    rate = 10000.0 ** (-2.0 * (torch.arange(dim) // 2) / dim)
    angle = position * rate.to(torch.float64)
    table = torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos())
    return table.float().unsqueeze(0)


@torch.fx.wrap  # compares shapes: a leaf for every FX tracer, not traced through
def add_pos_embed(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Tokens (B, N, C) plus the sinusoidal table, recomputed for N when the table has another length."""
    if pos.shape[1] != x.shape[1]:
        pos = sinusoid_position_embedding(x.shape[1], x.shape[2]).to(x)
    return x + pos


class TokenAttention(nn.Module):
    """One-head attention that narrows dim-wide tokens to out_dim; the residual goes through v.

    The input and output widths differ, so the skip connection adds v (already out_dim wide)
    instead of the input. As in the official code, logits are scaled by dim**-0.5 (the input width).
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.qkv = nn.Linear(dim, out_dim * 3, bias=False)
        self.proj = nn.Linear(out_dim, out_dim)
        self.fused_attn = use_fused_attn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, N, out_dim)
        if self.fused_attn:
            y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            y = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return v + self.proj(y)


class TokenTransformer(nn.Module):
    """The T2T re-structurization layer: TokenAttention, then a residual MLP at the narrow width."""

    def __init__(self, dim: int, out_dim: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = Mlp(out_dim, int(out_dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokensToToken(nn.Module):
    """Soft split, re-structure, soft split, re-structure, soft split, project to embed_dim."""

    def __init__(self, in_chans: int, embed_dim: int, token_dim: int = TOKEN_DIM) -> None:
        super().__init__()
        (k0, s0, p0), (k1, s1, p1), (k2, s2, p2) = SOFT_SPLITS
        self.soft_split0 = nn.Unfold(kernel_size=k0, stride=s0, padding=p0)
        self.soft_split1 = nn.Unfold(kernel_size=k1, stride=s1, padding=p1)
        self.soft_split2 = nn.Unfold(kernel_size=k2, stride=s2, padding=p2)
        self.attention1 = TokenTransformer(in_chans * k0 * k0, token_dim)
        self.attention2 = TokenTransformer(token_dim * k1 * k1, token_dim)
        self.project = nn.Linear(token_dim * k2 * k2, embed_dim)
        self.splits: List[Tuple[int, int, int]] = list(SOFT_SPLITS)  # an attribute, so TorchScript can loop over it

    @staticmethod
    def _restructure(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """(B, N, C) tokens back to a (B, C, H, W) map for the next soft split."""
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], size[0], size[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h0, w0), (h1, w1), _ = _grids(x.shape[-2], x.shape[-1], self.splits)
        x = self.attention1(self.soft_split0(x).transpose(1, 2))
        x = self.attention2(self.soft_split1(self._restructure(x, (h0, w0))).transpose(1, 2))
        x = self.soft_split2(self._restructure(x, (h1, w1))).transpose(1, 2)
        return self.project(x)


class T2TViT(nn.Module):
    """Tokens-to-token embedding, class token, sinusoidal position embedding, ViT blocks, head.

    Every argument is a plain value; `config` holds the four that define a T2T-ViT_t variant.
    """

    __jit_ignored_attributes__ = ["config"]  # a Python-only description, not used in forward

    def __init__(self, embed_dim: int = 384, depth: int = 14, num_heads: int = 6, mlp_ratio: float = 3.0,
                 img_size: Union[int, Tuple[int, int]] = 224, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "token", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 token_dim: int = TOKEN_DIM) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        if min(t2t_grid(img_size)[-1]) < 1:
            raise ValueError(f"img_size {img_size} is too small for three soft splits (output stride 16)")
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool {global_pool!r}: choose one of {GLOBAL_POOLS}")
        self.config = T2TViTConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.img_size = to_2tuple(img_size)
        self.num_classes, self.in_chans, self.global_pool = num_classes, in_chans, global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1  # the class token
        self.grad_checkpointing = False
        self.tokens_to_token = TokensToToken(in_chans, embed_dim, token_dim)
        h, w = t2t_grid(self.img_size)[-1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # fixed, not learned: a buffer, left out of state_dicts since it only depends on the token count
        self.register_buffer("pos_embed", sinusoid_position_embedding(h * w + 1, embed_dim), persistent=False)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=False, drop_path=rate, norm_layer=nn.LayerNorm)
            for rate in dpr])
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=OUTPUT_STRIDE)
                             for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)
        # timm's reconstruction arguments (save_for_hf writes them to config.json)
        update_model_args(self, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                          img_size=list(self.img_size), in_chans=in_chans, num_classes=num_classes,
                          global_pool=global_pool, token_dim=token_dim)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {"cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups by depth for layer-wise lr decay: the T2T module and class token, then each block."""
        return dict(stem=r"^cls_token|^tokens_to_token", blocks=[(r"^blocks\.(\d+)", None), (r"^norm\.", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head for `num_classes` (0: none); `global_pool` "token", "avg" or "" (no pooling) if given."""
        reset_head(self, num_classes, global_pool, GLOBAL_POOLS)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → tokens with the class token first and position embeddings added."""
        x = self.tokens_to_token(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return add_pos_embed(x, self.pos_embed)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False,
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The outputs of the blocks in `indices` (int: the last n; None: all), and the final features.

        Intermediates drop the class token and are NCHW maps of the stride-16 grid (or NLC tokens with
        output_fmt="NLC"); `norm` applies the final norm to them; with `stop_early` the blocks after the
        last one taken are not run. The final features are forward_features' (normalized, class token first).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt {output_fmt!r}: choose NCHW or NLC")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        height, width = t2t_grid(x.shape[-2:])[-1]
        x = self._embed(x)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
            if i in take_indices:
                y = (self.norm(x) if norm else x)[:, self.num_prefix_tokens:]
                intermediates.append(
                    y.reshape(y.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()
                    if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Remove the blocks after the last of `indices` (and the final norm / head); returns the indices kept."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → normalized tokens, class token first."""
        x = self._embed(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    """Pretrained cfg: the official evaluation transform; no weights are hosted."""
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None, "crop_pct": 0.9,
        "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "tokens_to_token.attention1.attn.qkv", "classifier": "head",
        "paper_name": "Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet",
        "paper_ids": "arXiv:2101.11986", "origin_url": "https://github.com/yitu-opensource/T2T-ViT",
        "license": "bsd-3-clause-clear", **kwargs,  # the official repository's (The Clear BSD License)
    }


default_cfgs = generate_default_cfgs({
    "t2t_vit_t_7": _cfg(notes=("the official code defines the transformer T2T module for t-14/19/24 only",)),
    "t2t_vit_t_10": _cfg(notes=("the official code defines the transformer T2T module for t-14/19/24 only",)),
    "t2t_vit_t_12": _cfg(notes=("the official code defines the transformer T2T module for t-14/19/24 only",)),
    "t2t_vit_t_14": _cfg(),
})


def _create_t2t(name: str, pretrained: bool = False, **kwargs: Any) -> T2TViT:
    cfg = entrypoint_cfg(name, "T2T-ViT", pretrained, kwargs)
    out_indices = kwargs.pop("out_indices", 3)  # the last three blocks, as timm's ViT
    return build_model_with_cfg(T2TViT, name, pretrained, pretrained_cfg=cfg,
                                feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def build_t2t_vit(variant: str | None = None, *, embed_dim: int | None = None, depth: int | None = None,
                  num_heads: int | None = None, mlp_ratio: float | None = None,
                  img_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000,
                  drop_path_rate: float = 0.0) -> T2TViT:
    """A T2T-ViT_t from a variant ("t_7", "t_10", "t_12", "t_14"), with any field overridden.

    Without a variant all four of embed_dim, depth, num_heads and mlp_ratio must be given; such a
    model is built through the entrypoint of the variant it equals, else `t2t_vit_t_7`'s (overridden
    like any timm entrypoint's arguments).
    """
    overrides = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "mlp_ratio": mlp_ratio}
    if variant is not None and variant not in T2T_VIT_CONFIGS:
        raise ValueError(f"unknown T2T-ViT variant {variant!r}; choose from {sorted(T2T_VIT_CONFIGS)}")
    base = asdict(T2T_VIT_CONFIGS[variant]) if variant else {}
    fields = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    missing = sorted(set(overrides) - set(fields))
    if missing:
        raise ValueError(f"a T2T-ViT without a variant needs {missing}")
    config = T2TViTConfig(**fields)
    name = variant or next((v for v, c in T2T_VIT_CONFIGS.items() if c == config), "t_7")
    return _create_t2t(f"t2t_vit_{name}", **fields, img_size=img_size, in_chans=in_chans,
                       num_classes=num_classes, drop_path_rate=drop_path_rate)


def _variant_args(variant: str) -> Dict[str, Any]:
    return asdict(T2T_VIT_CONFIGS[variant])


@register_model
def t2t_vit_t_7(pretrained: bool = False, **kwargs: Any) -> T2TViT:
    """T2T-ViT_t-7: embed_dim 256, depth 7, 4 heads, MLP ratio 2 (T2T-ViT-7 behind the transformer T2T module)."""
    return _create_t2t("t2t_vit_t_7", pretrained, **dict(_variant_args("t_7"), **kwargs))


@register_model
def t2t_vit_t_10(pretrained: bool = False, **kwargs: Any) -> T2TViT:
    """T2T-ViT_t-10: embed_dim 256, depth 10, 4 heads, MLP ratio 2."""
    return _create_t2t("t2t_vit_t_10", pretrained, **dict(_variant_args("t_10"), **kwargs))


@register_model
def t2t_vit_t_12(pretrained: bool = False, **kwargs: Any) -> T2TViT:
    """T2T-ViT_t-12: embed_dim 256, depth 12, 4 heads, MLP ratio 2."""
    return _create_t2t("t2t_vit_t_12", pretrained, **dict(_variant_args("t_12"), **kwargs))


@register_model
def t2t_vit_t_14(pretrained: bool = False, **kwargs: Any) -> T2TViT:
    """T2T-ViT_t-14 (paper): embed_dim 384, depth 14, 6 heads, MLP ratio 3; 21.5M params, 6.1 GFLOPs."""
    return _create_t2t("t2t_vit_t_14", pretrained, **dict(_variant_args("t_14"), **kwargs))
