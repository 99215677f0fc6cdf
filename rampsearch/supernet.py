"""A weight-sharing iFormer supernet: one set of weights that runs every ramp of a search space.

Convention (weight sharing by slicing, so an attention head and a conv-branch channel keep their
identity across ramps; the pool branch reads the second half of the C_h channels, as in iFormer, so
its inputs move with C_h):

- Each block stores the largest high-frequency mixer and the largest low-frequency mixer its
  space can ask for (`max_high`, `max_low` channels; see `block_ranges`). A sub-network with C_h
  high channels uses the *first* C_h rows of every high-frequency weight, and one with C_l
  attention channels the *last* C_l of the low-frequency ones: attention heads are numbered from
  the end, so a head's q/k/v weights are the same head in every ramp.
- The fusion depthwise conv and the output projection act on [conv-branch outputs (C_h),
  pool-branch outputs (C_h), attention outputs (C_l)]; they are stored per segment and each
  segment is sliced like its branch.
- A block whose ratio the space fixes stores exactly that split: it costs nothing extra.
- Architecture knobs: depth by dropping a stage's trailing blocks, MLP ratio by slicing the hidden
  units (first ones kept), pooling sizes for free (they have no weights). Widths (`embed_dims`) are
  left out: the low-frequency branch is the *last* C_l channels of a block, so under width slicing
  a channel that feeds attention at one width would feed the conv branch at another, and no head
  would keep its weights.

A sub-network runs as the very `InceptionTransformer` that `build_iformer` makes for its
architecture and ramp (a parameter-free template on the meta device), called with the sliced
weights (`torch.func.functional_call`). So `extract(sub)` (a real model holding copies of those
weights) gives the same logits, state_dict keys and closed-form FLOPs as the supernet at that ramp:
what a search scores is exactly what would be deployed.

Training (`sandwich_backward`, called by `train.fit` for a supernet) follows the sandwich rule of
BigNAS: every step trains the space's most-conv and most-attention sub-networks and `random_ramps`
sampled ones, gradients accumulated; with `distill` the larger-FLOPs extreme is the teacher of the
others (in-place distillation, its detached softmax as their target).
"""
from __future__ import annotations

import contextlib
import math
import random
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_

from .architecture import ArchChoices, Architecture
from .errors import UserError
from .flops import flops_model
from .parameterizations import PARAMETERIZATIONS, Knots
from .ramp import RampError, RampSchedule, allowed_high_heads

# Sub-network templates (parameter-free modules) kept per process: a sandwich step builds a few.
TEMPLATE_CACHE = 64


class SupernetError(UserError):
    """A supernet that does not fit what it is asked to run (the message names what differs)."""


@dataclass(frozen=True)
class Subnet:
    """One sub-network of a supernet: an architecture and its ramp."""

    arch: Architecture
    ramp: RampSchedule


@dataclass(frozen=True)
class SupernetSpec:
    """What a supernet can run (the shape of its space) and how each training step samples it.

    `architecture` is the space's base; `depths`, `mlp_ratios` and `pool_sizes` the searched
    choices (None: the base's value only). Ramps are drawn through the space's parameterization
    (`parameterization`, `knots`) within `ratio_range`.
    """

    architecture: Architecture
    img_size: int
    ratio_range: tuple[float, float] = (0.0, 1.0)
    parameterization: str = "free"
    knots: int = 4
    depths: tuple[tuple[int, int], ...] | None = None  # (min, max) per stage
    mlp_ratios: tuple[float, ...] | None = None
    pool_sizes: tuple[tuple[int, ...], ...] | None = None
    random_ramps: int = 2  # sampled sub-networks per step, besides the two extremes
    distill: bool = False  # in-place distillation from the larger extreme

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio_range", tuple(float(r) for r in self.ratio_range))
        for name in ("depths", "pool_sizes"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(tuple(v) for v in value))
        if self.mlp_ratios is not None:
            object.__setattr__(self, "mlp_ratios", tuple(float(m) for m in self.mlp_ratios))

    # -- shape -----------------------------------------------------------------------------------
    @property
    def largest(self) -> Architecture:
        """The deepest architecture with the widest MLP: every block and hidden unit the supernet stores."""
        base = self.architecture
        depths = tuple(hi for _, hi in self.depths) if self.depths else base.depths
        return Architecture(depths, base.embed_dims, base.head_dim, max(self.mlp_ratios or (base.mlp_ratio,)),
                            base.pool_sizes)

    def block_ranges(self) -> list[tuple[int, int]]:
        """Per block of `largest`, the (fewest, most) high-frequency heads a candidate can give it."""
        low, high = self.ratio_range
        ranges = []
        for units in self.largest.block_units:
            allowed = allowed_high_heads(units, low, high)
            ranges.append((allowed[0], allowed[-1]))
        return ranges

    def shape(self) -> dict[str, Any]:
        """What decides the weights' shapes and meaning (two supernets with equal shapes share a space)."""
        data = self.to_dict()
        for key in ("random_ramps", "distill", "parameterization", "knots"):
            data.pop(key)
        data["architecture"].pop("variant", None)  # nano and its depths/widths written out are one architecture
        return data

    # -- sub-networks ----------------------------------------------------------------------------
    def check(self, sub: Subnet) -> None:
        """Raise SupernetError / RampError unless this supernet can run `sub` (names what is outside)."""
        base, arch = self.architecture, sub.arch
        largest = self.largest
        if (arch.embed_dims, arch.head_dim) != (base.embed_dims, base.head_dim):
            raise SupernetError(f"the supernet was built for embed_dims {list(base.embed_dims)} and head_dim "
                                f"{base.head_dim}, not {list(arch.embed_dims)} / {arch.head_dim}")
        deeper = [s + 1 for s, (d, m) in enumerate(zip(arch.depths, largest.depths)) if d > m]
        if deeper:
            raise SupernetError(f"depths {list(arch.depths)} exceed the supernet's {list(largest.depths)} "
                                f"in stage(s) {deeper}")
        if arch.mlp_ratio > largest.mlp_ratio:
            raise SupernetError(f"mlp_ratio {arch.mlp_ratio} exceeds the supernet's {largest.mlp_ratio}")
        ranges = self.block_ranges()
        for block, k in enumerate(sub.ramp.high_heads(arch)):
            stage, index = arch.block_stages[block], block - sum(arch.depths[:arch.block_stages[block]])
            lo, hi = ranges[sum(largest.depths[:stage]) + index]
            if not lo <= k <= hi:
                units = arch.block_units[block]
                raise RampError(f"block {block} (stage {stage + 1}): ratio {k / units:.4g} is outside the supernet's "
                                f"space; it runs {lo / units:.4g}-{hi / units:.4g} there (ramp.range "
                                f"{list(self.ratio_range)})")

    def extremes(self) -> tuple[Subnet, Subnet]:
        """(most-conv, most-attention) sub-networks of the largest architecture."""
        arch = self.largest
        ranges = self.block_ranges()
        return (Subnet(arch, RampSchedule.from_high_heads(arch, [hi for _, hi in ranges])),
                Subnet(arch, RampSchedule.from_high_heads(arch, [lo for lo, _ in ranges])))

    def sample(self, rng: random.Random) -> Subnet:
        """A random sub-network, drawn as a sampler would propose one (uniform in each parameter)."""
        draw = _RandomSuggester(rng)
        choices = ArchChoices(depths=self.depths, mlp_ratio=self.mlp_ratios, pool_sizes=self.pool_sizes)
        arch = choices.suggest(draw, self.architecture)
        kind = PARAMETERIZATIONS[self.parameterization]
        parameterization = Knots(self.knots) if kind is Knots else kind()
        return Subnet(arch, parameterization.suggest(draw, arch, *self.ratio_range))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["architecture"] = self.architecture.to_dict()
        data["ratio_range"] = list(self.ratio_range)
        for key in ("depths", "pool_sizes"):
            if data[key] is not None:
                data[key] = [list(v) for v in data[key]]
        if data["mlp_ratios"] is not None:
            data["mlp_ratios"] = list(data["mlp_ratios"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SupernetSpec":
        return cls(**{**data, "architecture": Architecture.from_dict(data["architecture"])})


class _RandomSuggester:
    """The part of optuna.Trial that parameterizations and ArchChoices call, answered uniformly at random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_float(self, name: str, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.rng.choice(list(choices))


def _param(*shape: int) -> nn.Parameter:
    weight = nn.Parameter(torch.empty(shape))
    trunc_normal_(weight, std=0.02)  # the iFormer's own init of every conv and linear weight
    return weight


def _bias(size: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(size))


class SharedMixer(nn.Module):
    """An InceptionMixer's weights for every split of `dim` channels with `max_high` and `max_low` at most.

    `sliced(high)` returns the state_dict of the InceptionMixer with C_h = high (see the module doc).
    """

    def __init__(self, dim: int, max_high: int, max_low: int) -> None:
        super().__init__()
        self.dim, self.max_high, self.max_low = dim, max_high, max_low
        h, l = max_high, max_low
        if h:
            self.conv1 = _param(h, h // 2, 1, 1)  # conv branch: 1x1 expand of the first half
            self.proj1 = _param(h, 1, 3, 3)  # its 3x3 depthwise
            self.proj2 = _param(h, h // 2, 1, 1)  # pool branch: 1x1 expand of the second half
            self.proj2_bias = _bias(h)
            self.fuse_conv, self.fuse_pool = _param(h, 1, 3, 3), _param(h, 1, 3, 3)
            self.proj_conv, self.proj_pool = _param(dim, h, 1, 1), _param(dim, h, 1, 1)
        if l:
            self.qkv = _param(3 * l, l)
            self.qkv_bias = _bias(3 * l)
            self.fuse_low = _param(l, 1, 3, 3)
            self.proj_low = _param(dim, l, 1, 1)
        self.proj_bias = _bias(dim)

    def sliced(self, high: int) -> dict[str, torch.Tensor]:
        """InceptionMixer(dim, high) weights as views of these (gradients flow back into them)."""
        low, L = self.dim - high, self.max_low
        out: dict[str, torch.Tensor] = {}
        fuse, proj = [], []
        if high:
            out["high_mixer.conv1.weight"] = self.conv1[:high, :high // 2]
            out["high_mixer.proj1.weight"] = self.proj1[:high]
            out["high_mixer.proj2.weight"] = self.proj2[:high, :high // 2]
            out["high_mixer.proj2.bias"] = self.proj2_bias[:high]
            fuse += [self.fuse_conv[:high], self.fuse_pool[:high]]
            proj += [self.proj_conv[:, :high], self.proj_pool[:, :high]]
        if low:
            rows = [slice(s * L + L - low, (s + 1) * L) for s in range(3)]  # the last `low` of q, k and v
            out["low_mixer.qkv.weight"] = torch.cat([self.qkv[r, L - low:] for r in rows])
            out["low_mixer.qkv.bias"] = torch.cat([self.qkv_bias[r] for r in rows])
            fuse.append(self.fuse_low[L - low:])
            proj.append(self.proj_low[:, L - low:])
        out["conv_fuse.weight"] = torch.cat(fuse) if len(fuse) > 1 else fuse[0]
        out["proj.weight"] = torch.cat(proj, dim=1) if len(proj) > 1 else proj[0]
        out["proj.bias"] = self.proj_bias
        return out


class RampSupernet(nn.Module):
    """The supernet of a `SupernetSpec`. `forward(x, sub)` runs sub-network `sub` (default: the base
    architecture with its hand-set ramp); `extract(sub)` returns it as a standalone model.

    Everything but the mixers is one `InceptionTransformer` of the largest architecture (`body`),
    shared as is (MLPs sliced to the sub-network's hidden width); each block's mixer is a SharedMixer.
    """

    def __init__(self, spec: SupernetSpec, num_classes: int = 1000, drop_path_rate: float = 0.0) -> None:
        from .models import build_iformer

        super().__init__()
        self.spec, self.num_classes, self.drop_path_rate = spec, num_classes, drop_path_rate
        largest = spec.largest
        ranges = spec.block_ranges()
        self.body = build_iformer(**largest.build_kwargs(), ramp=RampSchedule.from_high_heads(
            largest, [hi for _, hi in ranges]), img_size=spec.img_size, num_classes=num_classes)
        hd = largest.head_dim
        for b, (blk, (lo, hi)) in enumerate(zip(self._blocks(), ranges)):
            blk.attn = SharedMixer(blk.norm1.normalized_shape[0], hi * hd, largest.block_widths[b] - lo * hd)
        self.default = Subnet(spec.architecture, RampSchedule.handset(spec.architecture))
        self._templates: OrderedDict[Subnet, nn.Module] = OrderedDict()
        conv, attention = spec.extremes()  # every step's first two sub-networks, the teacher first
        flops = flops_model(conv.arch, spec.img_size)
        self._extremes = [conv, attention] if flops.of(conv.ramp) >= flops.of(attention.ramp) else [attention, conv]

    def _blocks(self) -> Iterator[nn.Module]:
        for s in range(len(self.spec.largest.depths)):
            yield from getattr(self.body, f"blocks{s + 1}")

    def forward(self, x: torch.Tensor, sub: Subnet | None = None) -> torch.Tensor:
        sub = sub or self.default
        template = self._template(sub)
        template.train(self.training)
        return torch.func.functional_call(template, self.sub_state(sub), (x,))

    def sub_state(self, sub: Subnet) -> dict[str, torch.Tensor]:
        """The state_dict of sub-network `sub`, as views of the supernet's tensors (buffers shared)."""
        self.spec.check(sub)
        arch = sub.arch
        own = dict(self.body.named_parameters())
        own.update(self.body.named_buffers())
        highs = iter(c_h for c_h, _ in sub.ramp.channels(arch))
        out: dict[str, torch.Tensor] = {}
        for name, tensor in own.items():
            stage_block = _stage_block(name)
            if stage_block is None:
                out[name] = tensor
                continue
            stage, index, rest = stage_block
            if index >= arch.depths[stage] or rest.startswith("attn."):
                continue  # a dropped trailing block; mixers are added below
            hidden = int(arch.embed_dims[stage] * arch.mlp_ratio)
            if rest == "mlp.fc1.weight" or rest == "mlp.fc1.bias":
                tensor = tensor[:hidden]
            elif rest == "mlp.fc2.weight":
                tensor = tensor[:, :hidden]
            out[name] = tensor
        for stage, depth in enumerate(arch.depths):
            blocks = getattr(self.body, f"blocks{stage + 1}")
            for index in range(depth):
                mixer = blocks[index].attn.sliced(next(highs))
                out.update({f"blocks{stage + 1}.{index}.attn.{k}": v for k, v in mixer.items()})
        return out

    def _template(self, sub: Subnet) -> nn.Module:
        """The sub-network's module with no storage (meta device), to call with `sub_state` weights."""
        template = self._templates.get(sub)
        if template is None:
            from .models import build_iformer

            with torch.device("meta"):
                template = build_iformer(**sub.arch.build_kwargs(), ramp=sub.ramp, img_size=self.spec.img_size,
                                         num_classes=self.num_classes, drop_path_rate=self.drop_path_rate)
            self._templates[sub] = template
            while len(self._templates) > TEMPLATE_CACHE:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(sub)
        return template

    def extract(self, sub: Subnet | None = None) -> nn.Module:
        """Sub-network `sub` as a standalone `InceptionTransformer` from `build_iformer`, with copies of
        its inherited weights (strict load)."""
        from .models import build_iformer

        sub = sub or self.default
        state = {k: v.detach().clone() for k, v in self.sub_state(sub).items()}
        model = build_iformer(**sub.arch.build_kwargs(), ramp=sub.ramp, img_size=self.spec.img_size,
                              num_classes=self.num_classes)
        model.load_state_dict(state, strict=True)
        return model.to(next(iter(state.values())).device)

    def sandwich(self, key: Sequence[int]) -> list[Subnet]:
        """This step's sub-networks: the teacher extreme first, the other extreme, then `random_ramps`
        drawn from a stream seeded by `key` (the same on every DDP process)."""
        rng = random.Random(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
        return self._extremes + [self.spec.sample(rng) for _ in range(self.spec.random_ramps)]


def _stage_block(name: str) -> tuple[int, int, str] | None:
    """('blocks3.2.mlp.fc1.weight') → (2, 2, 'mlp.fc1.weight'); None for names outside the blocks."""
    head, _, rest = name.partition(".")
    if not head.startswith("blocks") or not head[6:].isdigit():
        return None
    index, _, rest = rest.partition(".")
    return int(head[6:]) - 1, int(index), rest


def sandwich_backward(model: nn.Module, supernet: RampSupernet, images: torch.Tensor, target: torch.Tensor,
                      criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      autocast: Callable[[], contextlib.AbstractContextManager], key: Sequence[int]) -> torch.Tensor:
    """One step's gradients (accumulated, not applied) over the sandwich; returns the mean loss.

    `model` is what the step calls (the supernet, maybe DDP-wrapped): gradients are synchronized
    once, on the last sub-network's backward.
    """
    subnets = supernet.sandwich(key)
    no_sync = getattr(model, "no_sync", None)
    total = torch.zeros((), device=images.device)
    teacher = None
    for i, sub in enumerate(subnets):
        last = i == len(subnets) - 1
        with (contextlib.nullcontext() if last or no_sync is None else no_sync()):
            with autocast():
                logits = model(images, sub)
                if teacher is not None:
                    loss = torch.sum(-teacher * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
                else:
                    loss = criterion(logits, target)
            if supernet.spec.distill and i == 0:
                teacher = logits.detach().float().softmax(dim=-1)
            (loss / len(subnets)).backward()
        total += loss.detach()
    return total / len(subnets)


def is_supernet(model: nn.Module) -> bool:
    return isinstance(model, RampSupernet)


__all__ = ["RampSupernet", "SharedMixer", "Subnet", "SupernetError", "SupernetSpec", "is_supernet",
           "sandwich_backward"]
