"""Search spaces: the YAML schema, its validation, and turning a sampler's numbers into a candidate.

The schema is documented in search_spaces/README.md. Every candidate's FLOPs and parameters come
from the closed-form model (rampsearch.flops) inside `suggest`, before any training, and are
given to Optuna as constraints (`trial.set_constraint`, feasible when <= 0), which the TPE,
NSGA-II and GP samplers use to steer away from over-budget regions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..architecture import VARIANTS, ArchChoices, Architecture, ArchitectureError
from ..errors import UserError, read_yaml_mapping
from ..flops import flops_model
from ..ramp import RampSchedule, allowed_high_heads
from ..sequential import AUTO, MIN_SEEDS
from ..parameterizations import PARAMETERIZATIONS, Knots, Parameterization
from .record import DEFAULT_METHOD, OVER_BUDGET, CandidateKey, TrialRecord, candidate_key
from .score import METRICS as SCORES, Score

SAMPLERS = ("tpe", "nsga2", "gp", "cmaes", "random")
PRUNERS = ("median", "hyperband", "none")
# The objectives a space may name; `accuracy` is the searched score (`search.score`), whose direction is its own.
OBJECTIVES = {"accuracy": None, "flops": "minimize", "params": "minimize"}
TOP_KEYS = {"name", "architecture", "img_size", "ramp", "search_architecture", "budget", "objectives",
            "method", "proxy", "supernet", "search", "retrain", "target"}
ARCHITECTURE_KEYS = {"variant", "depths", "embed_dims", "head_dim", "mlp_ratio", "pool_sizes"}
TARGET_KEYS = {"name", *ARCHITECTURE_KEYS, "img_size", "budget"}
# Where retraining starts: random weights, or those a supernet's sub-network inherits.
SCRATCH, SUPERNET = "scratch", "supernet"
INITS = (SCRATCH, SUPERNET)
# The most ramps a space lists to count its distinct candidates (a closed-form FLOPs count each, about
# 20 microseconds): per-stage ramps of nano are 945; one ratio per block of nano would be millions.
GRID_LIMIT = 50_000


class SpaceError(UserError):
    """A search-space file that does not validate (the message names the file and key)."""


@dataclass(frozen=True)
class Budget:
    gflops: float | None = None
    mparams: float | None = None
    num_classes: int = 1000  # FLOPs/params are counted with the paper's 1000-class head

    def violations(self, flops: int, params: int) -> dict[str, float]:
        """Constraint values (feasible when every value <= 0), in GFLOPs / M params over budget."""
        out = {}
        if self.gflops is not None:
            out["gflops"] = flops / 1e9 - self.gflops
        if self.mparams is not None:
            out["mparams"] = params / 1e6 - self.mparams
        return out


@dataclass(frozen=True)
class Candidate:
    arch: Architecture
    ramp: RampSchedule
    flops: int
    params: int
    violations: dict[str, float] = field(default_factory=dict)
    handset: bool = False  # the base architecture with its hand-set ramp

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations.values())

    @property
    def key(self) -> CandidateKey:
        return candidate_key(self.arch.to_dict(), self.ramp.ratios)

    def describe_violation(self) -> str:
        parts = [f"{k} over budget by {v:.4g}" for k, v in self.violations.items() if v > 0]
        return "; ".join(parts) or "within budget"

    def record(self, seed: int | None = None) -> TrialRecord:
        """The trial record of this candidate (before it trains)."""
        status, reason = (None, None) if self.feasible or self.handset else (
            OVER_BUDGET, f"over budget, never trained: {self.describe_violation()}")
        return TrialRecord(architecture=self.arch.to_dict(), ramp=self.ramp.ratios, flops=self.flops,
                           params=self.params, handset=self.handset, status=status, reason=reason, seed=seed)


@dataclass(frozen=True)
class ProxySettings:
    """How each candidate is scored: a short training (`proxy:` in the space)."""

    epochs: int  # resolved once: the space's proxy.epochs, else its recipe's epochs
    data: str = "synthetic-freq"
    recipe: str = "proxy"
    overrides: dict[str, Any] = field(default_factory=dict)  # recipe keys (`proxy.overrides`, `--set`)


@dataclass(frozen=True)
class SupernetSettings:
    """How the supernet of `method: one-shot` is trained and how it scores (`supernet:` in the space).

    It trains with the proxy's data, recipe and overrides, on the training data minus the search split,
    and scores each candidate on the first `score_images` images of the search split, after
    re-estimating the BatchNorm statistics of the sub-network on `bn_images` training images.
    """

    epochs: int  # resolved once: the space's supernet.epochs, else the proxy's epochs
    random_ramps: int = 2  # sampled sub-networks per step, besides the most-conv and most-attention ones
    distill: bool = False  # in-place distillation from the larger extreme
    score_images: int = 512
    bn_images: int = 256


@dataclass(frozen=True)
class SearchSettings:
    """How the sampler runs (`search:` in the space)."""

    trials: int = 20
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    # what candidates are ranked by (rampsearch.search.score); None: the method's default_score, set when the
    # space is loaded (rampsearch.search.load)
    score: str | None = None


@dataclass(frozen=True)
class RetrainSettings:
    """How the best schedules are retrained (`retrain:` in the space; command-line flags win)."""

    top: int = 1
    # Finalists: the best `rescore` (None: 3 x top) searched schedules are re-scored before the top
    # `top` are kept, against the winner's curse of a best-of-N pick (rampsearch.search.finalists):
    # method train: `rescore_seeds` more proxy trainings each, ranked by the mean over all seeds;
    # method one-shot: on the whole search split instead of its first score_images.
    rescore: int | None = None
    rescore_seeds: int = 2
    init: str = SCRATCH  # scratch | supernet (fine-tune the sub-networks the supernet extracts)
    # A number of seeds for every contender, or "auto": seed rounds until the best-vs-hand-set difference
    # is decided (rampsearch.sequential), at most `max_seeds`, and none started past `max_hours` of training.
    seeds: int | str = 3
    max_seeds: int = 8
    max_hours: float | None = None
    recipe: str = "paper"
    epochs: int | None = None  # None: the recipe's
    overrides: dict[str, Any] = field(default_factory=dict)  # recipe keys, over proxy.overrides

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """Where the searched ramps are deployed (`target:` in the space, `--target` on retrain/report/export):
    an architecture at an input size, under a FLOPs/params budget (None: the search's budget scaled to
    the target, rampsearch.transfer). The ramps map onto it through rampsearch.ramp.transfer_ramp."""

    name: str  # the variant, the file's stem, or `name:`; with img_size it names RUN_DIR/retrain-NAME-SIZE
    arch: Architecture
    img_size: int
    budget: Budget | None = None

    @property
    def label(self) -> str:
        return f"{self.name}-{self.img_size}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "architecture": self.arch.to_dict(), "img_size": self.img_size,
                "budget": None if self.budget is None else asdict(self.budget)}


@dataclass(frozen=True)
class SearchSpace:
    name: str
    base: Architecture
    img_size: int
    parameterization: Parameterization
    ratio_range: tuple[float, float]
    arch_choices: ArchChoices | None
    budget: Budget
    objectives: tuple[str, ...]
    proxy: ProxySettings
    search: SearchSettings
    supernet: SupernetSettings  # used by method one-shot
    retrain: RetrainSettings = RetrainSettings()
    source: str = ""
    method: str = DEFAULT_METHOD  # how a candidate is scored: a name in rampsearch.search.methods (which checks it)
    target: Target | None = None  # where `retrain` deploys the searched ramps; None: the searched architecture

    def proxy_recipe(self) -> Any:
        """The rampsearch.config.Recipe of the proxy trainings (and of the supernet): recipe and overrides applied."""
        from ..config import load_recipe

        return load_recipe(self.proxy.recipe, self.proxy.overrides, self.base.variant)

    def supernet_spec(self) -> Any:
        """The rampsearch.supernet.SupernetSpec of this space (its shape, and how a step samples it)."""
        from ..supernet import SupernetSpec

        choices, settings = self.arch_choices or ArchChoices(), self.supernet
        if choices.embed_dims:
            raise SpaceError(f"{self.source}: search_architecture.embed_dims: a supernet cannot share weights "
                             "across widths (rampsearch/supernet.py says why); use method: train, or search "
                             "depths, mlp_ratio and pool_sizes only")
        return SupernetSpec(self.base, self.img_size, self.ratio_range, self.parameterization.name,
                            getattr(self.parameterization, "count", 4), choices.depths, choices.mlp_ratio,
                            choices.pool_sizes, settings.random_ramps, settings.distill)

    @property
    def score(self) -> Score:
        """What the search ranks candidates by (the `accuracy` objective's value)."""
        if self.search.score is None:
            raise ValueError(f"{self.source}: the space was not checked by its method, so it has no score yet; "
                             "load spaces with rampsearch.search.load_space")
        return Score(self.search.score)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] or self.score.direction for o in self.objectives]

    def with_score(self, metric: str) -> "SearchSpace":
        """This space ranking by `metric` (a run whose study was created ranking by it keeps it)."""
        return replace(self, search=replace(self.search, score=metric))

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    # -- candidates ---------------------------------------------------------------------------------
    def candidate(self, arch: Architecture, ramp: RampSchedule, handset: bool = False) -> Candidate:
        model = flops_model(arch, self.img_size, self.budget.num_classes)
        heads = ramp.high_heads(arch)
        flops, params = model.of_heads(heads), model.params_of_heads(heads)
        return Candidate(arch, ramp, flops, params, self.budget.violations(flops, params), handset)

    def handset(self) -> Candidate:
        """The base architecture with its hand-set ramp: the trial every study starts with."""
        return self.candidate(self.base, RampSchedule.handset(self.base), handset=True)

    def handset_params(self) -> dict[str, Any]:
        low, high = self.ratio_range
        params = self.arch_choices.params_of(self.base) if self.arch_choices else {}
        params.update(self.parameterization.params_of(RampSchedule.handset(self.base), self.base, low, high))
        return params

    def suggest(self, trial: Any) -> Candidate:
        """Define-by-run: sample a candidate, save its record and budget constraints on the trial.

        The enqueued first trial (the baseline's params) gets the exact hand-set ramp, even when the
        parameterization can only approximate it (e.g. one ratio per stage).
        """
        arch = self.arch_choices.suggest(trial, self.base) if self.arch_choices else self.base
        ramp = self.parameterization.suggest(trial, arch, *self.ratio_range)
        is_handset = dict(trial.params) == self.handset_params()
        candidate = self.handset() if is_handset else self.candidate(arch, ramp)
        for key, value in candidate.violations.items():
            trial.set_constraint(key, value)
        candidate.record(self.search.seed).write(trial)
        return candidate

    def proposal(self, params: dict[str, Any]) -> tuple[CandidateKey, bool] | None:
        """What a sampler's numbers build, without a trial: (the candidate's key, whether it is within
        budget), or None when `params` lack a number the candidate needs (rampsearch.search.distinct)."""
        import optuna

        trial = optuna.trial.FixedTrial(params)
        try:
            arch = self.arch_choices.suggest(trial, self.base) if self.arch_choices else self.base
            candidate = self.candidate(arch, self.parameterization.suggest(trial, arch, *self.ratio_range))
        except ValueError:  # FixedTrial: a number the joint draw left out
            return None
        return candidate.key, candidate.feasible

    def grid(self) -> list[Candidate] | None:
        """Every distinct within-budget candidate this space can propose, when they are few enough to list
        (GRID_LIMIT ramps of the base architecture, searched alone), else None."""
        if self.arch_choices is not None:
            return None
        ramps = self.parameterization.grid(self.base, *self.ratio_range, GRID_LIMIT)
        if ramps is None:
            return None
        return [c for ramp in ramps if (c := self.candidate(self.base, ramp)).feasible]

    # -- budget -------------------------------------------------------------------------------------
    def flops_range(self) -> tuple[int, int]:
        """Smallest and largest FLOPs any candidate of this space can have."""
        low, high = self.ratio_range
        lowest, highest = None, None
        pairs = self.arch_choices.architectures(self.base) if self.arch_choices else [(self.base, self.base)]
        for shallow, deep in pairs:
            for arch, pick in ((shallow, min), (deep, max)):
                model = flops_model(arch, self.img_size, self.budget.num_classes)
                heads = []
                for units, row in zip(arch.block_units, model.rows):
                    heads.append(pick(allowed_high_heads(units, low, high), key=lambda k, row=row: row[k]))
                value = model.of_heads(heads)
                if pick is min:
                    lowest = value if lowest is None else min(lowest, value)
                else:
                    highest = value if highest is None else max(highest, value)
        return lowest, highest


# -- loading and validation --------------------------------------------------------------------------

def _err(source: str, key: str, message: str) -> SpaceError:
    return SpaceError(f"{source}: {key}: {message}")


def _mapping(data: Any, source: str, key: str, allowed: set[str]) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _err(source, key, f"expected a mapping, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _err(source, key, f"unknown keys {unknown}; allowed: {sorted(allowed)}")
    return data


def _number(value: Any, source: str, key: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        raise _err(source, key, f"expected a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def _per_stage(value: Any, source: str, key: str, item: str) -> tuple:
    if not isinstance(value, list) or len(value) != 4 or not all(isinstance(v, list) and v for v in value):
        raise _err(source, key, f"expected 4 lists (one per stage) of {item}, got {value!r}")
    return tuple(tuple(v) for v in value)


def _arch_choices(data: Any, base: Architecture, source: str) -> ArchChoices | None:
    if data is None:
        return None
    data = _mapping(data, source, "search_architecture", {"depths", "embed_dims", "mlp_ratio", "pool_sizes"})
    depths = dims = mlp = pools = None
    if "depths" in data:
        depths = _per_stage(data["depths"], source, "search_architecture.depths", "[min, max] depths")
        for s, pair in enumerate(depths):
            if len(pair) != 2 or not all(isinstance(d, int) and d >= 1 for d in pair) or pair[0] > pair[1]:
                raise _err(source, f"search_architecture.depths[{s}]",
                           f"expected [min, max] with 1 <= min <= max, got {list(pair)}")
    if "embed_dims" in data:
        dims = _per_stage(data["embed_dims"], source, "search_architecture.embed_dims", "width choices")
        for s, choices in enumerate(dims):
            bad = [d for d in choices if not isinstance(d, int) or d <= 0 or d % base.head_dim]
            if bad:
                raise _err(source, f"search_architecture.embed_dims[{s}]",
                           f"widths must be positive multiples of head_dim={base.head_dim}, got {bad}")
    if "mlp_ratio" in data:
        mlp = data["mlp_ratio"]
        if not isinstance(mlp, list) or not mlp:
            raise _err(source, "search_architecture.mlp_ratio", f"expected a list of choices, got {mlp!r}")
        mlp = tuple(_number(m, source, "search_architecture.mlp_ratio") for m in mlp)
    if "pool_sizes" in data:
        pools = _per_stage(data["pool_sizes"], source, "search_architecture.pool_sizes", "pooling choices")
        for s, choices in enumerate(pools):
            if not all(isinstance(p, int) and p >= 1 for p in choices):
                raise _err(source, f"search_architecture.pool_sizes[{s}]",
                           f"pool sizes must be integers >= 1, got {list(choices)}")
    choices = ArchChoices(depths, dims, mlp, pools)
    params = choices.params_of(base)
    for name, value in params.items():
        allowed = _allowed_values(choices, name)
        if value not in allowed:
            raise _err(source, "search_architecture",
                       f"the base architecture's {name}={value} is outside the searched values {allowed}; "
                       "the base (with its hand-set ramp) is the first trial, so it must be in the space")
    return choices


def _allowed_values(choices: ArchChoices, name: str) -> list:
    kind, _, stage = name.partition("_")
    if name == "mlp_ratio":
        return list(choices.mlp_ratio)
    s = int(stage) - 1
    if kind == "depth":
        lo, hi = choices.depths[s]
        return list(range(lo, hi + 1))
    return list((choices.embed_dims if kind == "dim" else choices.pool_sizes)[s])


def _budget(data: Any, source: str, key: str) -> Budget:
    budget = _mapping(data, source, key, {"gflops", "mparams", "num_classes"})
    return Budget(
        gflops=_number(budget["gflops"], source, f"{key}.gflops") if "gflops" in budget else None,
        mparams=_number(budget["mparams"], source, f"{key}.mparams") if "mparams" in budget else None,
        num_classes=_integer(budget.get("num_classes", 1000), source, f"{key}.num_classes", minimum=2))


def _architecture(data: dict[str, Any], source: str, key: str) -> Architecture:
    try:
        return Architecture.from_dict({k: v for k, v in data.items() if k in ARCHITECTURE_KEYS})
    except ArchitectureError as exc:
        raise _err(source, key, str(exc)) from None


def parse_target(data: Any, source: str, key: str = "target", name: str = "target") -> Target:
    """A `target:` mapping (or a target file's whole content) as a Target; errors name `source` and the key."""
    data = _mapping(data, source, key, TARGET_KEYS)
    if "variant" not in data and not {"depths", "embed_dims"} <= set(data):
        raise _err(source, key, "give a variant (small, base, large or nano) or both depths and embed_dims")
    arch = _architecture(data, source, key)
    variant_size = VARIANTS[arch.variant].img_size if arch.variant else 224
    img_size = _integer(data.get("img_size", variant_size), source, f"{key}.img_size", minimum=32)
    budget = _budget(data["budget"], source, f"{key}.budget") if "budget" in data else None
    if budget is not None and budget.gflops is not None:
        cheapest = flops_model(arch, img_size, budget.num_classes).min / 1e9
        if cheapest > budget.gflops:
            raise _err(source, f"{key}.budget.gflops", f"{budget.gflops} excludes every ramp of the target: its "
                                                       f"cheapest is {cheapest:.4g} GFLOPs at {img_size} px")
    label = data.get("name", arch.variant or name)
    if not isinstance(label, str) or not label or not all(c.isalnum() or c in "-_" for c in label):
        raise _err(source, f"{key}.name", f"expected letters, digits, '-' or '_' (it names a folder), got {label!r}")
    return Target(label, arch, img_size, budget)


def read_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read and validate a search-space YAML file as written (`overrides`, `--set`, go over its proxy.overrides);
    rampsearch.search.load_space also checks it by its method, as every search does."""
    data = read_yaml_mapping(path, "search space", SpaceError)
    return parse_space_data(data, str(path), default_name=Path(path).stem, overrides=overrides)


def _integer(value: Any, source: str, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _err(source, key, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _proxy_settings(data: Any, source: str, base: Architecture, overrides: dict[str, Any] | None) -> ProxySettings:
    """The proxy section, its recipe and overrides checked now, and its epochs resolved once."""
    from ..config import ConfigError, check_epochs, load_recipe

    proxy = _mapping(data, source, "proxy", {"epochs", "data", "recipe", "overrides"})
    if not isinstance(proxy.get("overrides", {}), dict):
        raise _err(source, "proxy.overrides", "expected a mapping of recipe keys to values")
    for key in ("data", "recipe"):
        if key in proxy and not isinstance(proxy[key], str):
            raise _err(source, f"proxy.{key}", f"expected a string, got {proxy[key]!r}")
    merged = {**proxy.get("overrides", {}), **(overrides or {})}
    recipe_name = proxy.get("recipe", "proxy")
    try:
        recipe = load_recipe(recipe_name, merged, base.variant)
    except ConfigError as exc:
        where = "--set" if overrides and any(k in str(exc) for k in overrides) else "proxy"
        raise _err(source, where, str(exc)) from None
    epochs = _integer(proxy["epochs"], source, "proxy.epochs") if "epochs" in proxy else recipe.epochs
    try:
        check_epochs(recipe, epochs)
    except ConfigError as exc:
        raise _err(source, "proxy.epochs", str(exc)) from None
    return ProxySettings(epochs=epochs, data=proxy.get("data", "synthetic-freq"), recipe=recipe_name,
                         overrides=merged)


def _search_settings(data: Any, source: str, multi_objective: bool) -> SearchSettings:
    search = _mapping(data, source, "search", {"trials", "sampler", "pruner", "seed", "score"})
    settings = SearchSettings(sampler="nsga2" if multi_objective else "tpe")
    settings = replace(settings, **search)
    _integer(settings.trials, source, "search.trials")
    _integer(settings.seed, source, "search.seed", minimum=0)
    if settings.sampler not in SAMPLERS:
        raise _err(source, "search.sampler", f"{settings.sampler!r} is not one of {list(SAMPLERS)}")
    if settings.pruner not in PRUNERS:
        raise _err(source, "search.pruner", f"{settings.pruner!r} is not one of {list(PRUNERS)}")
    if settings.score is not None and settings.score not in SCORES:
        raise _err(source, "search.score", f"{settings.score!r} is not one of {list(SCORES)} (loss: mean "
                                           "cross-entropy on the search split, lower is better; top1: its top-1)")
    if settings.sampler == "cmaes" and multi_objective:
        raise _err(source, "search.sampler", "cmaes is single-objective; use nsga2, tpe or gp for several objectives")
    return settings


def parse_retrain_settings(data: Any, source: str) -> RetrainSettings:
    """A `retrain:` mapping as settings; errors name `source` and the key."""
    retrain = dict(_mapping(data, source, "retrain", {"top", "seeds", "recipe", "epochs", "overrides", "rescore",
                                                      "rescore_seeds", "init", "max_seeds", "max_hours"}))
    for key in ("top", "epochs", "rescore"):
        if retrain.get(key) is not None:
            _integer(retrain[key], source, f"retrain.{key}")
    if retrain.get("seeds") not in (None, AUTO):
        if not isinstance(retrain["seeds"], int) or isinstance(retrain["seeds"], bool):
            raise _err(source, "retrain.seeds", f"expected a number of seeds or {AUTO!r}, got {retrain['seeds']!r}")
        _integer(retrain["seeds"], source, "retrain.seeds")
    if retrain.get("max_seeds") is not None:
        _integer(retrain["max_seeds"], source, "retrain.max_seeds", minimum=MIN_SEEDS)
    if retrain.get("max_hours") is not None:
        retrain["max_hours"] = _number(retrain["max_hours"], source, "retrain.max_hours")
    if "rescore_seeds" in retrain:
        _integer(retrain["rescore_seeds"], source, "retrain.rescore_seeds", minimum=0)
    if retrain.get("init", "scratch") not in INITS:
        raise _err(source, "retrain.init", f"expected one of {list(INITS)}, got {retrain['init']!r}")
    if retrain.get("rescore") is not None and retrain["rescore"] < retrain.get("top", 1):
        raise _err(source, "retrain.rescore", f"re-scores the best {retrain['rescore']} schedules, fewer than the "
                                              f"{retrain.get('top', 1)} retrained (retrain.top); raise it")
    if not isinstance(retrain.get("recipe", ""), str):
        raise _err(source, "retrain.recipe", f"expected a recipe name or file, got {retrain['recipe']!r}")
    if not isinstance(retrain.get("overrides", {}), dict):
        raise _err(source, "retrain.overrides", "expected a mapping of recipe keys to values")
    return RetrainSettings(**retrain)


def _supernet_settings(data: Any, source: str, proxy: ProxySettings) -> SupernetSettings:
    supernet = _mapping(data, source, "supernet", {"epochs", "random_ramps", "distill", "score_images", "bn_images"})
    for key, minimum in (("epochs", 1), ("random_ramps", 0), ("score_images", 1), ("bn_images", 0)):
        if key in supernet:
            _integer(supernet[key], source, f"supernet.{key}", minimum)
    if not isinstance(supernet.get("distill", False), bool):
        raise _err(source, "supernet.distill", f"expected true or false, got {supernet['distill']!r}")
    return SupernetSettings(**{"epochs": proxy.epochs, **supernet})


def parse_space_data(data: Any, source: str = "<space>", default_name: str = "search",
                     overrides: dict[str, Any] | None = None) -> SearchSpace:
    """A space read into a mapping, validated as written; its method is not checked and `search.score` is None
    unless set: rampsearch.search.load.parse_space does both."""
    data = _mapping(data, source, "(top level)", TOP_KEYS)
    if "architecture" not in data:
        raise _err(source, "architecture", "missing; give a variant (e.g. {variant: nano}) or depths/embed_dims")
    base = _architecture(_mapping(data["architecture"], source, "architecture", ARCHITECTURE_KEYS), source,
                         "architecture")
    img_size = _integer(data.get("img_size", 224), source, "img_size", minimum=32)

    ramp = _mapping(data.get("ramp"), source, "ramp", {"parameterization", "knots", "range"})
    kind = ramp.get("parameterization", "free")
    if kind not in PARAMETERIZATIONS:
        raise _err(source, "ramp.parameterization", f"{kind!r} is not one of {sorted(PARAMETERIZATIONS)}")
    if "knots" in ramp and kind != "knots":
        raise _err(source, "ramp.knots", "only used with parameterization: knots")
    if kind == "knots":
        parameterization: Parameterization = Knots(_integer(ramp.get("knots", 4), source, "ramp.knots"))
    else:
        parameterization = PARAMETERIZATIONS[kind]()
    ratio_range = ramp.get("range", [0.0, 1.0])
    if (not isinstance(ratio_range, list) or len(ratio_range) != 2
            or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r <= 1 for r in ratio_range)
            or ratio_range[0] >= ratio_range[1]):
        raise _err(source, "ramp.range", f"expected [low, high] with 0 <= low < high <= 1, got {ratio_range!r}")

    budget = _budget(data.get("budget"), source, "budget")

    objectives = data.get("objectives", ["accuracy"])
    if isinstance(objectives, str):
        objectives = [objectives]
    if (not isinstance(objectives, list) or not objectives or "accuracy" not in objectives
            or any(o not in OBJECTIVES for o in objectives) or len(set(objectives)) != len(objectives)):
        raise _err(source, "objectives", f"expected a list containing 'accuracy' and optionally "
                                         f"'flops'/'params', got {objectives!r}")
    if objectives[0] != "accuracy":  # every ranking reads the searched score as the first value
        raise _err(source, "objectives", f"'accuracy' (the searched score) must come first, got {objectives!r}; "
                                         f"write {['accuracy'] + [o for o in objectives if o != 'accuracy']!r}")

    method = data.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or not method:
        raise _err(source, "method", f"expected the name of a search method, got {method!r}")
    proxy = _proxy_settings(data.get("proxy"), source, base, overrides)
    return SearchSpace(
        name=str(data.get("name", default_name)), base=base, img_size=img_size, parameterization=parameterization,
        ratio_range=(float(ratio_range[0]), float(ratio_range[1])),
        arch_choices=_arch_choices(data.get("search_architecture"), base, source), budget=budget,
        objectives=tuple(objectives), proxy=proxy,
        search=_search_settings(data.get("search"), source, len(objectives) > 1),
        retrain=parse_retrain_settings(data.get("retrain"), source), source=source, method=method,
        supernet=_supernet_settings(data.get("supernet"), source, proxy),
        target=parse_target(data["target"], source) if data.get("target") is not None else None)


def check_budget(space: SearchSpace) -> tuple[int, int, str | None]:
    """(min FLOPs, max FLOPs, warning or None); raises SpaceError when the budget excludes everything."""
    low, high = space.flops_range()
    budget = space.budget.gflops
    if budget is not None and low / 1e9 > budget:
        raise SpaceError(
            f"{space.source}: budget.gflops={budget} excludes every candidate: this space spans "
            f"{low / 1e9:.4g}-{high / 1e9:.4g} GFLOPs at {space.img_size}px; raise the budget or "
            "search smaller architectures")
    warning = None
    if budget is not None and high / 1e9 <= budget:
        warning = (f"budget.gflops={budget} excludes nothing: every candidate is at most {high / 1e9:.4g} GFLOPs")
    return low, high, warning

