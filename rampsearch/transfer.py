"""Transfer: the searched ramps, mapped from the proxy they were found on onto the model users deploy.

Nobody searches at the size they deploy. A search runs on a proxy (iFormer-nano at 64 px, say);
`retrain --target small|base|large|FILE` (or a space's `target:` section) retrains its best schedules
on the target instead, against **the target's own hand-set ramp** (the paper's, for S/B/L):

1. Map: each searched schedule goes through `rampsearch.ramp.transfer_ramp` (stage by stage over
   normalized depth, snapped to whole heads of the target's widths); only the ramp transfers, any
   architecture the search chose stays behind.
2. Budget: the target's FLOPs and params are computed in closed form (`flops_model`). The budget is
   the target's own (`target.budget`), else the search's budget scaled by the ratio of the target's
   hand-set FLOPs (params) to the proxy's, i.e. the same headroom over the hand-set ramp; a search
   without a budget gives a target without one. A mapped ramp over budget is moved to the nearest
   snap within it (`fit_budget`), and its `note` says how far.
3. Retrain in RUN_DIR/retrain-NAME-SIZE/, kept apart from the proxy's RUN_DIR/retrain/.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .architecture import VARIANTS, Architecture
from .errors import UserError, read_yaml_mapping
from .flops import flops_model
from .ramp import RampSchedule, transfer_ratios
from .search.space import Budget, SearchSpace, Target, parse_target

PROXY = "proxy"  # --target proxy: retrain on the searched architecture, no transfer
RETRAIN_DIR = "retrain"  # in the run directory; a target's is retrain-NAME-SIZE


class TransferError(UserError):
    """A target that cannot be built or met (the message names the target and the fix)."""


def resolve_target(space: SearchSpace, given: str | None = None, img_size: int | None = None) -> Target | None:
    """The target of a retraining: `given` (small | base | large | nano | proxy | a target YAML file) over the
    space's `target:` section; `img_size` over either's size. None: the searched architecture itself."""
    if given is None:
        target = space.target
    elif given == PROXY:
        target = None
    elif given in VARIANTS:
        target = parse_target({"variant": given}, f"--target {given}")
    elif Path(given).is_file():
        target = parse_target(read_yaml_mapping(given, "target file", TransferError), given, key="(target file)",
                              name=Path(given).stem)
    else:
        raise TransferError(f"--target {given!r}: expected one of {sorted(VARIANTS)}, {PROXY!r} (the searched "
                            "architecture) or a target YAML file (search_spaces/README.md, 'Transfer')")
    if img_size is None:
        return target
    if target is None:
        raise TransferError(f"--img-size {img_size}: give a --target to retrain at another size (the search's own "
                            f"size is {space.img_size} px)")
    if img_size < 32:
        raise TransferError(f"--img-size {img_size}: expected an integer >= 32 (the model downsamples by 32)")
    return Target(target.name, target.arch, img_size, target.budget)


def retrain_command(run_dir: Path, target: str | None, img_size: int | None) -> str:
    """The `rampsearch retrain` command line that makes (or finishes) the retraining these flags name."""
    return " ".join(["rampsearch retrain", str(run_dir)] + [f"--target {target}"] * bool(target) +
                    [f"--img-size {img_size}"] * bool(img_size))


def retrain_dir(run_dir: Path, target: Target | None) -> Path:
    """Where a retraining of `run_dir` on `target` (None: the searched architecture) keeps its runs."""
    return run_dir / (RETRAIN_DIR if target is None else f"{RETRAIN_DIR}-{target.label}")


def check_retraining_found(run_dir: Path, folder: Path, given: str | None) -> None:
    """Refuse to read the searched model's retraining (`folder` is RUN_DIR/retrain, picked because no --target
    was `given` and the space has none) when it is missing but a target's retraining is there: the error
    names the flags that pick each one. A retraining asked for by --target is reported missing as such."""
    if given is not None or folder.name != RETRAIN_DIR or folder.exists():
        return
    found = sorted(p for p in run_dir.glob(f"{RETRAIN_DIR}-*") if p.is_dir())
    if found:
        raise UserError(f"{run_dir} has no retraining of the searched model in {RETRAIN_DIR}/, but has "
                        f"{', '.join(p.name + '/' for p in found)}: pass {', or '.join(map(_target_flags, found))} "
                        f"(or run `{retrain_command(run_dir, None, None)}` first)")


def _target_flags(folder: Path) -> str:
    """The flags that name the target of retraining folder `folder` (RUN_DIR/retrain-NAME-SIZE)."""
    name, _, size = folder.name.removeprefix(f"{RETRAIN_DIR}-").rpartition("-")
    if name not in VARIANTS:
        return f"--target with the target file of {name!r} ({size} px)"
    return f"--target {name}" + ("" if size == str(VARIANTS[name].img_size) else f" --img-size {size}")


def _costs(arch: Architecture, img_size: int, ramp: RampSchedule, num_classes: int) -> tuple[int, int]:
    model = flops_model(arch, img_size, num_classes)
    heads = ramp.high_heads(arch)
    return model.of_heads(heads), model.params_of_heads(heads)


def target_budget(space: SearchSpace, target: Target) -> tuple[Budget, str]:
    """The target's budget and where it comes from, in words."""
    if target.budget is not None:
        return target.budget, "the target's own budget"
    budget = space.budget
    if budget.gflops is None and budget.mparams is None:
        return Budget(num_classes=budget.num_classes), "none: the search had no budget"
    proxy = _costs(space.base, space.img_size, RampSchedule.handset(space.base), budget.num_classes)
    deployed = _costs(target.arch, target.img_size, RampSchedule.handset(target.arch), budget.num_classes)
    scaled = Budget(gflops=None if budget.gflops is None else budget.gflops * deployed[0] / proxy[0],
                    mparams=None if budget.mparams is None else budget.mparams * deployed[1] / proxy[1],
                    num_classes=budget.num_classes)
    return scaled, "the search's budget scaled by the target's hand-set FLOPs (params) over the proxy's"


def _excess(budget: Budget, flops: int, params: int) -> float:
    """How far over budget, as a sum of relative excesses (0 when within)."""
    over = 0.0
    if budget.gflops is not None:
        over += max(0.0, flops / 1e9 - budget.gflops) / budget.gflops
    if budget.mparams is not None:
        over += max(0.0, params / 1e6 - budget.mparams) / budget.mparams
    return over


def fit_budget(ratios: list[float], arch: Architecture, img_size: int, budget: Budget) -> tuple[RampSchedule, int]:
    """The snap of `ratios` (unsnapped, per block) nearest to them within `budget`, and how many heads moved.

    From the nearest snap, one head at a time: each step makes the move (one block, one head up or
    down) that adds the least distance to `ratios` (sum over blocks of |C_h/C - ratio|) per unit of
    budget excess removed, until within. Greedy, so near-nearest rather than provably nearest; the
    FLOPs and params tables make each step a few table reads. Raises TransferError when even the
    cheapest ramp of `arch` is over budget.
    """
    model = flops_model(arch, img_size, budget.num_classes)
    heads = list(RampSchedule.snapped(arch, ratios).high_heads(arch))
    flops, params = model.of_heads(heads), model.params_of_heads(heads)
    moved = 0
    while (over := _excess(budget, flops, params)) > 0:
        best = None
        for b, (units, ratio) in enumerate(zip(arch.block_units, ratios)):
            for k in (heads[b] - 1, heads[b] + 1):
                if not 0 <= k <= units:
                    continue
                new_flops = flops + model.rows[b][k] - model.rows[b][heads[b]]
                new_params = params + model.params_rows[b][k] - model.params_rows[b][heads[b]]
                gain = over - _excess(budget, new_flops, new_params)
                if gain <= 0:
                    continue
                cost = abs(k / units - ratio) - abs(heads[b] / units - ratio)
                if best is None or cost / gain < best[0]:
                    best = (cost / gain, b, k, new_flops, new_params)
        if best is None:
            raise TransferError(
                f"no ramp of the target ({'+'.join(map(str, arch.depths))} blocks, widths "
                f"{list(arch.embed_dims)}, {img_size} px) fits the budget ({describe_budget(budget)}): the cheapest it "
                f"gets is {flops / 1e9:.4g} GFLOPs, {params / 1e6:.4g} M params; give the target a larger `budget:`")
        _, b, heads[b], flops, params = best
        moved += 1
    return RampSchedule.from_high_heads(arch, heads), moved


def describe_budget(budget: Budget) -> str:
    """A budget in words: '4.85 GFLOPs, 20 M params', or 'none'."""
    parts = ([f"{budget.gflops:.4g} GFLOPs"] if budget.gflops is not None else []) + (
        [f"{budget.mparams:.4g} M params"] if budget.mparams is not None else [])
    return ", ".join(parts) or "none"


@dataclass(frozen=True)
class Transferred:
    """A schedule on the target: its ramp there, its costs, and what the mapping did, in words."""

    ramp: RampSchedule
    flops: int
    params: int
    note: str


@dataclass(frozen=True)
class Transfer:
    """A target with its resolved budget: maps searched schedules onto it (`map`) and gives its hand-set ramp."""

    target: Target
    budget: Budget
    budget_from: str  # in words

    @classmethod
    def to(cls, space: SearchSpace, target: Target) -> "Transfer":
        return cls(target, *target_budget(space, target))

    def _on_target(self, ramp: RampSchedule, note: str) -> Transferred:
        return Transferred(ramp, *_costs(self.target.arch, self.target.img_size, ramp, self.budget.num_classes), note)

    def handset(self) -> Transferred:
        name = f"iFormer-{self.target.name}" if self.target.arch.variant else "the target"
        return self._on_target(RampSchedule.handset(self.target.arch), f"{name}'s own hand-set ramp")

    def map(self, ramp: RampSchedule, source: Architecture) -> Transferred:
        """`ramp` (of `source`) on the target, within the budget."""
        arch, size = self.target.arch, self.target.img_size
        ratios = transfer_ratios(ramp, source, arch)
        nearest = RampSchedule.snapped(arch, ratios)
        fitted, moved = fit_budget(ratios, arch, size, self.budget)
        note = "mapped stage by stage and snapped to whole heads"
        if moved:
            changed = sum(a != b for a, b in zip(nearest.ratios, fitted.ratios))
            note += (f"; its nearest snap was over the target budget ({describe_budget(self.budget)}), so it moved "
                     f"{moved} head{'s' if moved > 1 else ''} in {changed} block{'s' if changed > 1 else ''} to fit")
        if fitted == RampSchedule.handset(arch):
            note += "; this is the target's hand-set ramp itself"
        return self._on_target(fitted, note)

    def to_dict(self, space: SearchSpace) -> dict[str, Any]:
        """What plan.json and the report say about the transfer."""
        return {**self.target.to_dict(), "budget": asdict(self.budget), "budget_from": self.budget_from,
                "source": {"architecture": space.base.to_dict(), "img_size": space.img_size}}
