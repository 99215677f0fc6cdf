"""The one-shot method: train a space's supernet once, then score each candidate on it in a second.

The supernet (rampsearch.supernet) trains through `train.fit` like any model, on the training data
minus the search split; a search keeps it in RUN_DIR/supernet/ unless `--supernet DIR` names one
trained earlier for the same space. A candidate is scored by the sub-network extracted from it (the
very model that would be deployed), after re-estimating its BatchNorm statistics on `bn_images`
training images, over the first `score_images` images of the search split: the same fixed images
for every candidate, so scores are paired. A score has every metric with its standard error over
images, and the per-image values (`Scored`) for paired comparisons (rampsearch.search.score); the
search ranks by `search.score` (default: the loss). Scoring runs in the recipe's precision (`amp`).
Before retraining, the best searched schedules are scored again on the whole search split instead
of its first `supernet.score_images` images, and the best is compared with the runner-up image by
image on the same images.
"""
from __future__ import annotations

import dataclasses
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ...checkpoint import RESULT, read_json
from ...config import SEARCH
from ...data import data_identity
from ...model_spec import ModelSpec
from ...ramp import RampError, RampSchedule
from ...supernet import RampSupernet, Subnet, SupernetError, SupernetSpec
from ..finalists import best_vs_runner_up
from ..options import SearchOptions
from ..record import ONE_SHOT
from ..score import LOSS
from ..space import Candidate, RetrainSettings, SearchSpace, SpaceError
from ..trial import train_config
from .protocol import Finalist, Pool, Report, Words, model_of

SUPERNET_DIR = "supernet"  # in the run directory
ALL_IMAGES = sys.maxsize  # `make_scorer(score_images=...)`: the whole search split
# Recipe keys that decide which images the supernet trained on: a supernet trained under other values
# may have seen the search split it would now be scored on.
DATA_KEYS = ("data_classes", "data_fraction", "val_split", "split_seed", "search_split")


def supernet_config(space: SearchSpace, out: Path | None, device: str | None = None,
                    quiet: bool = True) -> dict[str, Any]:
    """The `train.fit` config of the space's supernet (proxy data and recipe, the search split held out)."""
    spec = ModelSpec(space.img_size, supernet=space.supernet_spec())
    return train_config(space, spec, out, device, epochs=space.supernet.epochs, quiet=quiet,
                        data_split=SEARCH)


def train_supernet(space: SearchSpace, out: Path, device: str | None = None, quiet: bool = False,
                   on_epoch: Callable[[int, dict[str, float]], None] | None = None):
    """Train (or resume, or find finished) the space's supernet in `out`; returns the TrainResult.
    `on_epoch(epoch, metrics)` is called after every epoch trained (metrics of the hand-set sub-network)."""
    from ...train import fit

    return fit(supernet_config(space, out, device, quiet), on_epoch)


def check_supernet(folder: Path, space: SearchSpace) -> None:
    """Refuse a supernet folder that is unfinished or was trained for another space or other data."""
    if not (folder / RESULT).is_file():
        raise SupernetError(f"--supernet {folder}: no finished supernet there ({RESULT} is missing); train one with "
                            "`rampsearch supernet SPACE.yaml --out DIR`, or leave out --supernet")
    trained = read_json(folder / "config.json", "supernet config")
    wanted = space.supernet_spec()
    if "supernet" not in trained:
        raise SupernetError(f"--supernet {folder}: holds a trained model that is not a supernet")
    differs = [f"supernet.{k}" for k, v in wanted.shape().items()
               if SupernetSpec.from_dict(trained["supernet"]).shape().get(k) != v]
    differs += [k for k in ("img_size",) if trained.get(k) != space.img_size]
    ours = space.proxy_recipe().to_dict()
    differs += [f"recipe.{k}" for k in ours if (k in DATA_KEYS or k.startswith("synthetic_"))
                and trained["recipe"].get(k) != ours[k]]
    if trained.get("data") != data_identity(space.proxy.data):
        differs.append("data")
    if differs:
        raise SupernetError(f"--supernet {folder} was trained for another space or data (differs in "
                            f"{', '.join(differs)}); train one for this space with `rampsearch supernet`")


def load_supernet(folder: Path, space: SearchSpace, device: str = "cpu") -> RampSupernet:
    """The finished supernet in `folder`, checked against `space` (weights verified by their checksum)."""
    from safetensors import safe_open

    from ...checkpoint import load_weights
    from ...train import MODEL_FILE

    check_supernet(folder, space)
    with safe_open(str(folder / MODEL_FILE), "pt") as f:
        num_classes = f.get_slice("body.head.weight").get_shape()[0]
    supernet = RampSupernet(space.supernet_spec(), num_classes)
    load_weights(folder / MODEL_FILE, supernet)
    return supernet.to(device).eval()


def _batches(dataset, count: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` images of `dataset` as in-memory batches."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    return [(torch.stack([x for x, _ in items[i:i + batch_size]]), torch.tensor([y for _, y in items[i:i + batch_size]]))
            for i in range(0, len(items), batch_size)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Re-estimate every BatchNorm's running statistics of `model` as the plain mean over `batches`.

    A supernet's statistics mix every sub-network it trained; each extracted one needs its own.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not batches or not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    for images, _ in batches:
        model(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


@dataclass(frozen=True)
class Scored:
    """A candidate's scores on the scoring images, with the per-image values a paired comparison needs."""

    metrics: dict[str, float]  # top1, top5, loss and their standard errors over images (train.evaluate)
    losses: torch.Tensor  # per image, in scoring order
    hits: torch.Tensor  # per image: 1.0 where top-1 was right
    seconds: float

    def per_image(self, metric: str) -> torch.Tensor:
        """Per-image values of `metric` (rampsearch.search.score: loss, or top1 in percent)."""
        return self.losses if metric == LOSS else 100 * self.hits


@dataclass
class Scorer:
    """A supernet with its fixed scoring and BatchNorm images, ready to score candidates."""

    supernet: RampSupernet
    score_batches: list[tuple[torch.Tensor, torch.Tensor]]
    bn_batches: list[tuple[torch.Tensor, torch.Tensor]]
    device: str
    amp: str  # the recipe's: scoring runs in the precision the supernet trained in

    @property
    def images(self) -> int:
        """How many search-split images a score is over."""
        return sum(len(target) for _, target in self.score_batches)

    def score(self, candidate: Candidate) -> Scored:
        """The candidate's sub-network on the scoring images: its metrics and per-image values."""
        from ...train import amp_dtype, evaluate

        started = time.perf_counter()
        model = self.supernet.extract(Subnet(candidate.arch, candidate.ramp))
        dtype = amp_dtype(self.amp, torch.device(self.device))
        with torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=dtype is not None):
            recalibrate_batchnorm(model, self.bn_batches)
        per_image: list[tuple[torch.Tensor, torch.Tensor]] = []
        metrics = evaluate(model, self.score_batches, self.device, self.amp, per_image=per_image)
        losses, hits = (torch.cat(values) for values in zip(*per_image))
        return Scored(metrics, losses, hits, time.perf_counter() - started)


def make_scorer(space: SearchSpace, folder: Path, device: str = "cpu", score_images: int | None = None) -> Scorer:
    """A Scorer for `space` with the supernet in `folder`, on the first `score_images` (None: the space's;
    ALL_IMAGES: all) of the search split."""
    from ...data import build_datasets

    settings = space.supernet
    supernet = load_supernet(folder, space, device)
    recipe = space.proxy_recipe()
    data = build_datasets(space.proxy.data, recipe, space.img_size, split=SEARCH)
    batch = recipe.eval_batch_size or recipe.batch_size
    with torch.random.fork_rng(devices=[]):  # image-folder training transforms are random: the same images everywhere
        state = random.getstate()
        random.seed(recipe.seed)
        torch.manual_seed(recipe.seed)
        bn_batches = _batches(data.train, settings.bn_images, batch)
        random.setstate(state)
    return Scorer(supernet, _batches(data.val, score_images or settings.score_images, batch), bn_batches, device,
                  recipe.amp)


_SCORERS: dict[tuple[str, str, str], Scorer] = {}  # one per process: loading data and weights takes seconds


def score_candidate(space: SearchSpace, folder: Path, candidate: Candidate, device: str = "cpu") -> dict[str, Any]:
    """Score `candidate` on the supernet in `folder` (kept loaded for this process's next candidates)."""
    key = (str(Path(folder).resolve()), space.source, device)
    if key not in _SCORERS:
        _SCORERS.clear()
        _SCORERS[key] = make_scorer(space, folder, device)
    scored = _SCORERS[key].score(candidate)
    row = {"epoch": 1, **scored.metrics}
    return {**row, "history": [row], "seconds": scored.seconds}


class OneShot:
    name = ONE_SHOT
    default_score = LOSS  # rampsearch.search.score says why: top-1 over a few hundred images ties
    per_epoch = False
    words = Words(scored_by="one-shot supernet scoring",
                  score_is="the schedule's score on the search's weight-sharing supernet (one training for every "
                           "candidate)",
                  score_source="Supernet", scores="the supernet's scores")

    def check_space(self, space: SearchSpace) -> None:
        """A space a supernet cannot run fails here, naming the key."""
        base = space.base
        try:
            space.supernet_spec().check(Subnet(base, RampSchedule.handset(base)))
        except RampError as exc:
            raise SpaceError(f"{space.source}: ramp.range: the hand-set ramp, every search's first trial and the "
                             f"supernet's yardstick, is outside it: {exc}; widen the range") from None

    def resolve(self, options: SearchOptions, run_dir: Path) -> SearchOptions:
        """Without --supernet, the search trains its own in RUN_DIR/supernet."""
        return options if options.supernet is not None else dataclasses.replace(options,
                                                                                 supernet=str(run_dir / SUPERNET_DIR))

    def preflight(self, space: SearchSpace, options: SearchOptions) -> None:
        """The supernet's training, or the --supernet folder, which must fit the space."""
        from ...train import preflight

        if options.supernet is None:
            preflight(supernet_config(space, None, options.device))
        else:
            check_supernet(Path(options.supernet), space)

    def plan(self, space: SearchSpace, trials: int) -> str:
        return f"{trials} candidates scored on a supernet"

    def epochs(self, space: SearchSpace) -> int:
        return 1

    def prepare(self, space: SearchSpace, options: SearchOptions, run_dir: Path, show_progress: bool,
                log: Callable[[str], None]) -> None:
        """Train the run's supernet (or resume it, or find it finished) unless --supernet named one."""
        if Path(options.supernet) != run_dir / SUPERNET_DIR:
            return
        log(f"supernet: training in {options.supernet} ({space.supernet.epochs} epochs; a rerun resumes it)")
        epochs = space.supernet.epochs

        def epoch_line(epoch: int, metrics: dict[str, float]) -> None:  # a line per epoch, in a log file too
            log(f"supernet: epoch {epoch}/{epochs}: hand-set sub-network loss {metrics['loss']:.4f}, "
                f"top-1 {metrics['top1']:.2f}")

        result = train_supernet(space, Path(options.supernet), options.device, quiet=not show_progress,
                                on_epoch=epoch_line)
        log(f"supernet: trained in {result.seconds:.0f}s; hand-set sub-network top-1 on the search split "
            f"{result.final['top1']:.2f}%")

    def evaluate(self, space: SearchSpace, candidate: Candidate, run_dir: Path, folder: int, options: SearchOptions,
                 report: Report | None) -> dict[str, Any]:
        """Its score on the supernet (a disk every worker reads); nothing is reported before it returns."""
        from ...train import resolve_device

        return score_candidate(space, Path(options.supernet), candidate, resolve_device(options.device))

    def rescore(self, pool: Pool, space: SearchSpace, run_dir: Path, settings: RetrainSettings, supernet: str | None,
                device: str, log: Callable[[str], None]) -> tuple[list[Finalist], str | None]:
        """Each of `pool` scored again on the whole search split, and how the best compares with the runner-up
        image by image (the same images: what both get right or wrong alike cancels)."""
        from ...train import resolve_device

        scorer = make_scorer(space, Path(supernet), resolve_device(device), score_images=ALL_IMAGES)
        metric = space.score.metric
        how = (f"one of the best {len(pool)} searched; supernet {space.score.short} on all {scorer.images} "
               "search-split images")
        log(f"re-scoring the best {len(pool)} searched schedules on all {scorer.images} search-split images")
        scored = {t.number: scorer.score(space.candidate(*model_of(r))) for t, r in pool}
        out = [Finalist(t, r, (scored[t.number].metrics[metric],), how) for t, r in pool]
        return out, best_vs_runner_up(out, space, lambda f: scored[f.trial.number].per_image(metric), "images",
                                      "not distinguishable on these images: a tie in all but name")


METHOD = OneShot()
