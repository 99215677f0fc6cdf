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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import Mlp, to_2tuple, trunc_normal_, use_fused_attn
from timm.models import register_model
from timm.models.vision_transformer import Block

from ._entrypoints import model_kwargs

__all__ = ["T2T_VIT_CONFIGS", "T2TViT", "T2TViTConfig", "build_t2t_vit", "t2t_grid"]

TOKEN_DIM = 64  # width of the tokens inside the T2T module
# (kernel, stride, padding) of the three soft splits
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))


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


def t2t_grid(img_size: int | tuple[int, int]) -> list[tuple[int, int]]:
    """Token grid (H, W) after each of the three soft splits; the last one is the ViT's."""
    h, w = to_2tuple(img_size)
    grids = []
    for kernel, stride, padding in SOFT_SPLITS:
        h, w = _split_out(h, kernel, stride, padding), _split_out(w, kernel, stride, padding)
        grids.append((h, w))
    return grids


def sinusoid_position_embedding(num_positions: int, dim: int) -> torch.Tensor:
    """(1, num_positions, dim): sin on even channels, cos on odd, wavelengths 2π·10000^(2i/dim)."""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    rate = 10000.0 ** (-2.0 * (torch.arange(dim) // 2) / dim)
    angle = position * rate.to(torch.float64)
    table = torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos())
    return table.float().unsqueeze(0)


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

    @staticmethod
    def _restructure(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, N, C) tokens back to a (B, C, H, W) map for the next soft split."""
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h0, w0), (h1, w1), _ = t2t_grid(x.shape[-2:])
        x = self.attention1(self.soft_split0(x).transpose(1, 2))
        x = self.attention2(self.soft_split1(self._restructure(x, (h0, w0))).transpose(1, 2))
        x = self.soft_split2(self._restructure(x, (h1, w1))).transpose(1, 2)
        return self.project(x)


class T2TViT(nn.Module):
    """Tokens-to-token embedding, class token, sinusoidal position embedding, ViT blocks, head."""

    def __init__(self, config: T2TViTConfig, img_size: int | tuple[int, int] = 224, in_chans: int = 3,
                 num_classes: int = 1000, drop_path_rate: float = 0.0, token_dim: int = TOKEN_DIM) -> None:
        super().__init__()
        self.config = config
        self.img_size = to_2tuple(img_size)
        self.num_classes = num_classes
        self.num_features = self.embed_dim = config.embed_dim
        self.tokens_to_token = TokensToToken(in_chans, config.embed_dim, token_dim)
        h, w = t2t_grid(self.img_size)[-1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        # fixed, not learned: a buffer, left out of state_dicts since it only depends on the token count
        self.register_buffer("pos_embed", sinusoid_position_embedding(h * w + 1, config.embed_dim),
                             persistent=False)
        dpr = [drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.Sequential(*[
            Block(config.embed_dim, config.num_heads, config.mlp_ratio, qkv_bias=False, drop_path=rate,
                  norm_layer=nn.LayerNorm)
            for rate in dpr])
        self.norm = nn.LayerNorm(config.embed_dim)
        self.head = nn.Linear(config.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.pos_embed
        if pos.shape[1] != x.shape[1]:  # another input size: the same function of the new token count
            pos = sinusoid_position_embedding(x.shape[1], x.shape[2]).to(x)
        return x + pos

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → normalized tokens, class token first."""
        x = self.tokens_to_token(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.norm(self.blocks(self._pos_embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def build_t2t_vit(variant: str | None = None, *, embed_dim: int | None = None, depth: int | None = None,
                  num_heads: int | None = None, mlp_ratio: float | None = None,
                  img_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000,
                  drop_path_rate: float = 0.0) -> T2TViT:
    """A T2T-ViT_t from a variant ("t_7", "t_10", "t_12", "t_14"), with any field overridden.

    Without a variant all four of embed_dim, depth, num_heads and mlp_ratio must be given.
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
    if config.embed_dim % config.num_heads:
        raise ValueError(f"embed_dim {config.embed_dim} is not a multiple of num_heads {config.num_heads}")
    if min(t2t_grid(img_size)[-1]) < 1:
        raise ValueError(f"img_size {img_size} is too small for three soft splits (output stride 16)")
    model = T2TViT(config, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                   drop_path_rate=drop_path_rate)
    model.pretrained_cfg = _cfg(img_size, num_classes, in_chans)
    return model


def _cfg(img_size: int | tuple[int, int], num_classes: int, in_chans: int) -> dict[str, Any]:
    # The official evaluation transform; read by timm.data.resolve_model_data_config.
    return {"input_size": (in_chans, *to_2tuple(img_size)), "num_classes": num_classes,
            "crop_pct": 0.9, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225), "classifier": "head"}


def _create(variant: str, pretrained: bool, **kwargs: Any) -> T2TViT:
    return build_t2t_vit(variant, **model_kwargs("T2T-ViT", pretrained, kwargs))


@register_model
def t2t_vit_t_7(pretrained: bool = False, **kwargs: Any) -> T2TViT:
    return _create("t_7", pretrained, **kwargs)


@register_model
def t2t_vit_t_10(pretrained: bool = False, **kwargs: Any) -> T2TViT:
    return _create("t_10", pretrained, **kwargs)


@register_model
def t2t_vit_t_12(pretrained: bool = False, **kwargs: Any) -> T2TViT:
    return _create("t_12", pretrained, **kwargs)


@register_model
def t2t_vit_t_14(pretrained: bool = False, **kwargs: Any) -> T2TViT:
    return _create("t_14", pretrained, **kwargs)
