"""Training configuration: a run (`TrainConfig`) and the recipe it trains with (`Recipe`).

A run says *what* to train: the model (a variant or an architecture, and a ramp), the data, the
input size, epochs, seed, device and output directory. A recipe says *how*: optimizer, schedule,
augmentation, regularization, batch size, precision. Recipes are YAML files; two ship with the
package (rampsearch/configs/recipes/):

- `paper`: the official iFormer ImageNet-1K recipe (see the comments in paper.yaml);
- `proxy`: short, light augmentation, sized for a CPU search trial on synthetic-freq data.

Every recipe key can be overridden. Precedence, lowest to highest:

1. the recipe file (`recipe:` / `--recipe`, default `proxy`); a file with `base: proxy|paper|FILE`
   starts from that recipe and only lists what it changes;
2. the recipe's `variant_overrides` for the model's variant (e.g. the paper's drop path 0.4 for base);
3. `overrides:` (a mapping, e.g. a search space's `proxy.overrides`) / `--set KEY=VALUE` on the command line;
4. the run's own fields and their dedicated flags: `epochs` (`--epochs`) and `seed` (`--seed`)
   replace the recipe's `epochs` and `seed` when given.

The schema of a recipe is the `Recipe` dataclass below; each field is documented where it is set,
in the shipped YAML files. Unknown keys and values of the wrong type are errors that name the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .errors import UserError, read_yaml_mapping

RECIPE_DIR = Path(__file__).parent / "configs" / "recipes"

# `TrainConfig.data_split`: what a run trains and evaluates on (rampsearch.data re-exports these).
# FINAL: the training data, evaluated on val (`rampsearch train`, retraining). SEARCH: the training data
# minus its search split (`search_split`), evaluated on that split (search trials), so that candidates
# are never selected on the val images the final comparison reports.
FINAL, SEARCH = "final", "search"
DATA_SPLITS = (FINAL, SEARCH)


# `data_cache` values, and what each means (YAML 1.1 reads a bare on/off as true/false).
DATA_CACHE_VALUES: dict[str | bool, str] = {"auto": "auto", "on": "on", "off": "off", True: "on", False: "off"}


class ConfigError(UserError):
    """A configuration that cannot be used; the message names the key or file."""


@dataclass(frozen=True)
class Recipe:
    """How to train. Every field is required in a complete recipe file; see configs/recipes/*.yaml."""

    # length and schedule
    epochs: int
    warmup_epochs: float
    cooldown_epochs: int
    sched: str
    sched_on_epochs: bool
    lr: float
    warmup_lr: float
    min_lr: float
    # optimizer
    batch_size: int
    eval_batch_size: int | None
    opt: str
    weight_decay: float
    opt_eps: float
    opt_betas: list[float]
    clip_grad: float | None
    # regularization
    drop_path: float
    ema_decay: float | None
    smoothing: float
    mixup: float
    cutmix: float
    mixup_prob: float
    mixup_switch_prob: float
    mixup_mode: str
    # image-folder transforms (timm create_transform); synthetic-freq ignores them, see rampsearch.data
    auto_augment: str | None
    reprob: float
    remode: str
    recount: int
    scale: list[float]
    ratio: list[float]
    hflip: float
    color_jitter: float
    train_interpolation: str
    crop_pct: float
    interpolation: str
    mean: list[float]
    std: list[float]
    aug_repeats: int
    # data selection (proxy controls)
    data_classes: int | list[str] | None
    data_fraction: float
    val_split: float
    search_split: float
    split_seed: int
    strict_data: bool
    workers: int
    data_cache: str | bool  # auto | on | off (YAML reads on/off as booleans); rampsearch.data.cache
    synthetic_low_classes: int
    synthetic_high_classes: int
    synthetic_train_per_class: int
    synthetic_val_per_class: int
    synthetic_seed: int
    synthetic_texture: str
    # execution
    amp: str
    channels_last: bool
    compile: bool
    seed: int
    shared_init: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig:
    """One training run. Give `variant` or `architecture` (an Architecture.to_dict() mapping), `baseline` or
    `supernet`."""

    variant: str | None = None
    architecture: dict[str, Any] | None = None
    ramp: str | list[float] = "handset"
    baseline: dict[str, Any] | None = None  # a rampsearch.baselines.BaselineSpec as a dict: train that ViT instead
    supernet: dict[str, Any] | None = None  # a rampsearch.supernet.SupernetSpec as a dict: train that supernet
    init: str | None = None  # a .safetensors file of initial weights (e.g. inherited from a supernet); None: random
    img_size: int | None = None  # None: the variant's size (64 for nano, else 224)
    data: str = "synthetic-freq"
    recipe: str = "proxy"
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None  # None: the recipe's
    seed: int | None = None  # None: the recipe's
    out: str | None = None  # None: write nothing (no checkpoints, no metrics.csv)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = True  # continue from out/ if it holds a checkpoint of the same run
    quiet: bool = False  # no progress bar
    keep_checkpoints: bool = False  # keep the resume state (ckpt-*, checkpoint.json) after the run completes
    data_split: str = FINAL  # final: evaluate on val | search: on the search split of the training data

    def __post_init__(self) -> None:
        check_data_split(self.data_split)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training config keys {unknown}; allowed: {sorted(known)}")
        return cls(**{k: _coerce(v, _hints(cls)[k], k) for k, v in data.items()})


def check_data_split(value: Any) -> str:
    """`value` if it is a valid `data_split`, else a ConfigError naming the key and the valid values."""
    if value not in DATA_SPLITS:
        raise ConfigError(f"data_split must be {FINAL!r} (train on the training data, evaluate on val) or "
                          f"{SEARCH!r} (hold out the recipe's search_split of it and evaluate there), "
                          f"got {value!r}")
    return value


# -- recipes ---------------------------------------------------------------------------------------

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def recipe_path(name: str | Path) -> Path:
    """A shipped recipe's file ('paper', 'proxy') or a user's YAML file."""
    shipped = RECIPE_DIR / f"{name}.yaml"
    if isinstance(name, str) and "/" not in name and shipped.is_file():
        return shipped
    path = Path(name)
    if not path.is_file():
        choices = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise ConfigError(f"recipe {name!r} is neither a shipped recipe {choices} nor an existing YAML file")
    return path


def _read_recipe_file(name: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file's keys with its `base:` chain resolved (base first, then the file's own keys)."""
    path = recipe_path(name)
    if path.resolve() in seen:
        raise ConfigError(f"recipe {path}: `base:` chain loops back to itself")
    data = read_yaml_mapping(path, "recipe", ConfigError)
    base = data.pop("base", None)
    if base is None:
        return data
    relative = path.parent / str(base)  # a base file is found next to the file naming it
    merged = _read_recipe_file(relative if relative.is_file() else str(base), seen + (path.resolve(),))
    ours, theirs = data.pop("variant_overrides", None) or {}, merged.pop("variant_overrides", None) or {}
    by_variant = {v: {**theirs.get(v, {}), **ours.get(v, {})} for v in {*ours, *theirs}}
    return {**merged, **data, "variant_overrides": by_variant}


def load_recipe(name: str | Path = "proxy", overrides: Mapping[str, Any] | None = None,
                variant: str | None = None) -> Recipe:
    """The recipe `name` with its variant overrides for `variant`, then `overrides`, applied and checked."""
    data = _read_recipe_file(name)
    by_variant = data.pop("variant_overrides", None) or {}
    if not isinstance(by_variant, dict):
        raise ConfigError(f"recipe {name}: variant_overrides must map a variant name to recipe keys")
    layers = [("recipe " + str(name), data), (f"variant_overrides.{variant}", by_variant.get(variant) or {}),
              ("overrides", dict(overrides or {}))]
    fields = _hints(Recipe)
    merged: dict[str, Any] = {}
    for source, layer in layers:
        for key, value in layer.items():
            if key not in fields:
                raise ConfigError(f"{source}: unknown recipe key {key!r}; see the keys of "
                                  f"{RECIPE_DIR / 'paper.yaml'}")
            merged[key] = _coerce(value, fields[key], key)
    missing = sorted(set(fields) - set(merged))
    if missing:
        raise ConfigError(f"recipe {name} lacks {missing}; add them or start the file with `base: proxy` "
                          "(or `base: paper`) to inherit the rest")
    return _checked(Recipe(**merged))


def _checked(r: Recipe) -> Recipe:
    problems = []
    if r.epochs < 1 or r.batch_size < 1:
        problems.append("epochs and batch_size must be >= 1")
    if r.warmup_epochs < 0 or r.cooldown_epochs < 0:
        problems.append("warmup_epochs and cooldown_epochs must be >= 0")
    if not 0 < r.data_fraction <= 1:
        problems.append(f"data_fraction must be in (0, 1], got {r.data_fraction}")
    if not 0 < r.val_split < 1:
        problems.append(f"val_split must be in (0, 1), got {r.val_split}")
    if not 0 < r.search_split < 1:
        problems.append(f"search_split must be in (0, 1), got {r.search_split}")
    if r.synthetic_texture not in ("grating", "dot-lattice"):
        problems.append(f"synthetic_texture must be grating or dot-lattice, got {r.synthetic_texture!r}")
    if r.data_cache not in DATA_CACHE_VALUES:
        problems.append(f"data_cache must be auto, on or off, got {r.data_cache!r}")
    if r.amp not in ("auto", "bf16", "off"):
        problems.append(f"amp must be auto, bf16 or off, got {r.amp!r}")
    if (r.mixup > 0 or r.cutmix > 0) and r.batch_size % 2:
        problems.append("mixup/cutmix need an even batch_size")
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(r, data_cache=DATA_CACHE_VALUES[r.data_cache])


def check_epochs(recipe: Recipe, epochs: int) -> None:
    """A run must be longer than its warmup and cooldown, or its lr schedule has no body."""
    if not epochs > recipe.warmup_epochs + recipe.cooldown_epochs:
        raise ConfigError(f"epochs ({epochs}) must exceed warmup_epochs ({recipe.warmup_epochs}) + "
                          f"cooldown_epochs ({recipe.cooldown_epochs}); lower them with --set")


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items → overrides; VALUE is read as YAML (numbers, lists, null, true)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=2e-3")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return out


# -- value checking --------------------------------------------------------------------------------

def _coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as type `hint`, or a ConfigError naming `key` (YAML reads 1e-3 as a string, hence floats)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key}: a value is required (got null)")
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                continue
        if origin is str and isinstance(value, (str, Path)):
            return str(value)
        if origin is dict and isinstance(value, Mapping):
            return dict(value)
        if origin is list and isinstance(value, (list, tuple)):
            (item,) = typing.get_args(option)
            try:
                return [_coerce(v, item, key) for v in value]
            except ConfigError:
                continue
    expected = " or ".join("null" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{key}: expected {expected}, got {value!r}")
