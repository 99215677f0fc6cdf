"""Retraining of a search's best schedules and of the hand-set ramp, seed by seed.

Every contender (the top-K within-budget searched schedules, the hand-set ramp and, optionally,
ViT baselines at matched FLOPs) trains with the same recipe, data and seeds through `train.fit`, on
all training images, and reports val (`data_split: final`; search trials were scored on the search
split of the training images instead, rampsearch.data).
With a target (`--target`, or the space's `target:` section; rampsearch.transfer) the searched ramps
are mapped onto the target architecture and size and compared there against the target's own hand-set
ramp, in RUN_DIR/retrain-NAME-SIZE/ instead of RUN_DIR/retrain/.
Training goes in rounds, one seed of every contender per round, so the contenders always share seeds
(the same data order, augmentation and, where shapes agree, initial weights: rampsearch.train), and
`seeds: auto` can stop after any round once the best-vs-hand-set difference is decided
(rampsearch.sequential; RETRAIN_DIR/stopping.json says why it stopped).
Each run keeps its output in RETRAIN_DIR/NAME/seedS/, so rerunning resumes; a finished run (its
result.json exists) is not trained again. Each contender's inference throughput is measured once
here (fixed batch, warm-up, median of repeats) and stored. Results go to RETRAIN_DIR/results.csv,
written once every run has finished.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .checkpoint import RESULT, read_json, save_weights, write_json
from .config import FINAL
from .errors import UserError
from .model_spec import ModelSpec, build_model
from .redact import redact_command
from .search import methods
from .search.finalists import choose_finalists
from .search.results import standing
from .search.space import SCRATCH, SUPERNET, RetrainSettings, SearchSpace, Target, parse_retrain_settings
from .search.load import load_run
from .search.study import search_metadata
from .search.trial import run_trial, train_config
from .sequential import AUTO, STOPPING, Look, SequentialPlan, look
from .transfer import Transfer, resolve_target, retrain_dir

HANDSET = "handset"
# Inference throughput: fp32, eval mode, this batch, one warm-up pass, the median of these repeats.
THROUGHPUT_BATCH = 32
THROUGHPUT_REPEATS = 5
THROUGHPUT_CLASSES = 1000  # the paper's head, as FLOPs are counted
INIT_FILE = "init.safetensors"  # a contender's inherited weights (--init supernet)


@dataclass
class Contender:
    """One schedule (or ViT baseline) to retrain."""

    name: str
    kind: str  # "ramp" (an iFormer with a ramp) or "vit" (a ViT baseline at matched FLOPs)
    flops: int
    params: int
    spec: dict[str, Any]  # ModelSpec.to_dict()
    proxy_score: float | None = None
    trial: int | None = None
    inference_img_s: float | None = None
    note: str = ""
    chosen_by: str = ""  # how a searched schedule became a finalist (rampsearch.search.finalists)
    init: str = SCRATCH  # scratch | supernet: the weights its retraining starts from
    # With a target: the schedule as searched (ramp ratios and architecture) and what the transfer did.
    proxy_ramp: list[float] | None = None
    proxy_architecture: dict[str, Any] | None = None
    transfer: str = ""


@dataclass(frozen=True)
class RetrainPlan:
    space: SearchSpace
    settings: RetrainSettings
    contenders: list[Contender]
    search: dict[str, Any] = field(default_factory=dict)  # how the hand-set ramp stood in the search
    target: Target | None = None  # None: retrained on the searched architecture
    transfer: dict[str, Any] | None = None  # Transfer.to_dict(), for plan.json and the report


def retrain_settings(space: SearchSpace, **given: Any) -> RetrainSettings:
    """Command-line values over the space's `retrain:` section (overrides merge key by key), checked as the
    space's own section is."""
    merged = {**space.retrain.to_dict(), **{k: v for k, v in given.items() if v is not None}}
    merged["overrides"] = {**space.retrain.overrides, **(given.get("overrides") or {})}
    if merged["epochs"] is None:  # the recipe's own length
        del merged["epochs"]
    return parse_retrain_settings(merged, "retraining options")


def plan(run_dir: Path, settings_given: dict[str, Any], baselines: bool, storage: str | None = None,
         device: str = "auto", log: Callable[[str], None] = print, target: str | None = None,
         img_size: int | None = None) -> RetrainPlan:
    """The hand-set ramp, the top-K distinct within-budget searched schedules (re-scored first, see
    rampsearch.search.finalists), and optional ViT baselines; on a target when one is given or the space
    has one (`target`, `img_size`: rampsearch.transfer.resolve_target)."""
    space, study = load_run(run_dir, storage)
    target = resolve_target(space, target, img_size)
    settings = retrain_settings(space, **settings_given)
    result = standing(study)
    if result.handset is None and result.best is None:
        raise UserError(f"{run_dir}: the search has no complete trial yet; run or continue `rampsearch search`")
    meta = search_metadata(run_dir)
    method = meta.get("method") or space.method
    if settings.init == SUPERNET and not meta.get("supernet"):
        raise UserError(f"--init supernet: {run_dir} was searched with method {method!r} and has no supernet; use "
                        "--init scratch, or search with --method one-shot")
    if settings.init == SUPERNET and target is not None:
        raise UserError(f"--init supernet: the supernet's weights are for the searched architecture, not for the "
                        f"target {target.label}; use --init scratch, or --target proxy")
    init = settings.init
    transfer = Transfer.to(space, target) if target is not None else None
    handset = space.handset()
    proxy_handset = result.handset.values[0] if result.handset else None
    baseline = dict(proxy_score=proxy_handset, trial=result.handset.number if result.handset else None,
                    chosen_by="the hand-set ramp: the baseline", init=init)
    if transfer is None:
        contenders = [Contender(HANDSET, "ramp", handset.flops, handset.params,
                                ModelSpec.iformer(handset.arch, handset.ramp, space.img_size).to_dict(), **baseline)]
    else:
        deployed = transfer.handset()
        contenders = [Contender(HANDSET, "ramp", deployed.flops, deployed.params,
                                ModelSpec.iformer(target.arch, deployed.ramp, target.img_size).to_dict(), **baseline,
                                proxy_ramp=list(handset.ramp.ratios), proxy_architecture=handset.arch.to_dict(),
                                transfer=deployed.note)]
    finalists = choose_finalists(run_dir, space, study, settings, methods.get(method), meta.get("supernet"), device, log)
    for rank, finalist in enumerate(finalists, start=1):
        record, name = finalist.record, "best" if rank == 1 else f"top{rank}"
        common = dict(proxy_score=finalist.trial.values[0], trial=finalist.trial.number, chosen_by=finalist.how,
                      init=init)
        if transfer is None:
            contenders.append(Contender(name, "ramp", record.flops, record.params, finalist.spec(space).to_dict(),
                                        **common))
            continue
        searched = finalist.spec(space)
        mapped = transfer.map(searched.ramp, searched.architecture)
        spec = ModelSpec.iformer(target.arch, mapped.ramp, target.img_size).to_dict()
        # one that lands on the target's hand-set ramp stays (its note says so): it is the search's answer
        twin = next((c.name for c in contenders[1:] if c.spec == spec), None)
        if twin is not None:
            log(f"note: {name} (trial {finalist.trial.number}) maps onto the same target ramp as {twin}; "
                "it is retrained once, as " + twin)
            continue
        contenders.append(Contender(name, "ramp", mapped.flops, mapped.params, spec, **common,
                                    proxy_ramp=list(searched.ramp.ratios),
                                    proxy_architecture=searched.architecture.to_dict(), transfer=mapped.note))
    if baselines:
        from .baselines import baseline_models

        img_size = target.img_size if target else space.img_size
        budget = transfer.budget.gflops if transfer else space.budget.gflops
        budget = budget or contenders[0].flops / 1e9
        for vit in baseline_models(budget, img_size, space.budget.num_classes):
            contenders.append(Contender(vit.family, "vit", vit.flops, vit.params,
                                        ModelSpec(vit.img_size, vit=vit).to_dict(), note=vit.note,
                                        chosen_by="a ViT baseline at matched FLOPs"))
    search = {"handset_scored_higher": result.handset_scored_higher, "sentence": result.sentence(),
              "handset_proxy": proxy_handset, "best_proxy": result.best.values[0] if result.best else None,
              "method": method, "supernet": meta.get("supernet")}
    return RetrainPlan(space, settings, contenders, search, target, transfer.to_dict(space) if transfer else None)


def _inherit(retrain_plan: RetrainPlan, out: Path, device: str) -> None:
    """Write each iFormer contender's weights as the search's supernet passes them on (out/NAME/INIT_FILE)."""
    from .search.methods.one_shot import load_supernet
    from .supernet import Subnet
    from .train import resolve_device

    supernet = load_supernet(Path(retrain_plan.search["supernet"]), retrain_plan.space, resolve_device(device))
    for contender in retrain_plan.contenders:
        if contender.init == SUPERNET:
            spec = ModelSpec.from_dict(contender.spec)
            (out / contender.name).mkdir(exist_ok=True)
            save_weights(out / contender.name / INIT_FILE,
                         supernet.extract(Subnet(spec.architecture, spec.ramp)).state_dict())


def inference_throughput(spec: ModelSpec) -> float:
    """Images per second of the model's fp32 forward pass on this machine (eval, median of repeats)."""
    import torch

    model = build_model(spec, THROUGHPUT_CLASSES).eval()
    x = torch.randn(THROUGHPUT_BATCH, 3, spec.img_size, spec.img_size)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: first-call allocations and kernel selection
        for _ in range(THROUGHPUT_REPEATS):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return THROUGHPUT_BATCH / statistics.median(times)


def _earlier_throughput(plan_file: Path) -> dict[str, float]:
    """Inference img/s an earlier run of this retraining measured, by model spec."""
    if not plan_file.is_file():
        return {}
    earlier = read_json(plan_file, "retraining plan")
    return {json.dumps(c["spec"], sort_keys=True): c["inference_img_s"] for c in earlier.get("contenders", [])
            if c.get("spec") and c.get("inference_img_s")}


def _train_seed(contender: Contender, seed: int, folder: Path, config: Callable[[Contender, int], dict[str, Any]],
                settings: RetrainSettings, log: Callable[[str], None]) -> dict[str, Any]:
    """One contender's run with one seed (trained now, or read back when an earlier run finished it)."""
    if (folder / RESULT).exists():  # train.fit writes it when the run is complete
        log(f"{contender.name} seed {seed}: done earlier")
    else:
        log(f"{contender.name} seed {seed}: training ({settings.recipe} recipe, {settings.epochs or 'its'} epochs)")
        run_trial(config(contender, seed), report=lambda epoch, metrics: None)
    result = read_json(folder / RESULT, "training result")  # one source, fresh or earlier
    return {"name": contender.name, "kind": contender.kind, "seed": seed, "top1": result["top1"],
            "top5": result["top5"], "loss": result["loss"], "seconds": result["seconds"],
            "flops": contender.flops, "params": contender.params, "proxy_score": contender.proxy_score,
            "trial": contender.trial, "inference_img_s": contender.inference_img_s}


# -- seeds: auto ----------------------------------------------------------------------------------
DECIDED = "decided"
MAX_SEEDS_REACHED = "max_seeds"
TIME_BUDGET = "max_hours"
NOTHING_TO_COMPARE = "nothing_to_compare"


@dataclass(frozen=True)
class Stop:
    """Why `seeds: auto` stopped after `seeds` seeds, and the looks it made (rampsearch.sequential)."""

    reason: str  # DECIDED | MAX_SEEDS_REACHED | TIME_BUDGET | NOTHING_TO_COMPARE
    looks: list[Look]
    seeds: int
    hours: float = 0.0  # training time spent, for TIME_BUDGET

    def sentence(self, settings: RetrainSettings) -> str:
        last = self.looks[-1] if self.looks else None
        if self.reason == DECIDED and last is not None:
            side = "better" if last.difference > 0 else "worse"
            return (f"decided: the best schedule is {side} than the hand-set ramp (the adjusted 95% interval "
                    f"[{last.ci_low:+.2f}, {last.ci_high:+.2f}] excludes 0)")
        if self.reason == TIME_BUDGET:
            return (f"undecided when the next round would have passed max_hours {settings.max_hours:g} "
                    f"({self.hours:.2f} h of training spent)")
        if self.reason == NOTHING_TO_COMPARE:
            return "the search found no schedule besides the hand-set ramp, so there was no difference to decide"
        return f"undecided at max_seeds {settings.max_seeds}"

    def to_dict(self, settings: RetrainSettings) -> dict[str, Any]:
        return {"reason": self.reason, "seeds": self.seeds, "sentence": self.sentence(settings),
                "rule": _sequential_plan(settings).to_dict(), "looks": [look.to_dict() for look in self.looks]}


def _sequential_plan(settings: RetrainSettings) -> SequentialPlan:
    return SequentialPlan(settings.max_seeds)  # max_seeds >= MIN_SEEDS, checked with the settings


def _looks(differences: list[float] | None, seeds: int, plan: SequentialPlan) -> list[Look]:
    """Every look the rule has made after `seeds` seeds (none without a best, or before the first)."""
    return [] if differences is None else [look(differences[:n], plan) for n in range(plan.min_seeds, seeds + 1)]


def _differences(rows: list[dict[str, Any]]) -> list[float] | None:
    """Per-seed top-1 differences, best minus hand-set, in seed order (None without a best)."""
    by = {(row["name"], row["seed"]): row["top1"] for row in rows}
    seeds = sorted({row["seed"] for row in rows})
    if ("best", seeds[0]) not in by:
        return None
    return [by[("best", s)] - by[(HANDSET, s)] for s in seeds]


def _stop_after_round(rows: list[dict[str, Any]], seeds: int, settings: RetrainSettings) -> Stop | None:
    """Stop when the rule decides after this round, or at max_seeds; None: train another round."""
    plan = _sequential_plan(settings)
    differences = _differences(rows)
    if differences is None:
        return Stop(NOTHING_TO_COMPARE, [], seeds) if seeds >= plan.min_seeds else None
    looks = _looks(differences, seeds, plan)
    if looks and looks[-1].decided:
        return Stop(DECIDED, looks, seeds)
    if seeds >= settings.max_seeds:
        return Stop(MAX_SEEDS_REACHED, looks, seeds)
    return None


def _stop_before_round(rows: list[dict[str, Any]], seed: int, settings: RetrainSettings) -> Stop | None:
    """Stop before round `seed` when training it (as long as the average round so far) would pass max_hours."""
    if settings.max_hours is None:
        return None
    spent = sum(row["seconds"] for row in rows) / 3600
    if spent + spent / seed <= settings.max_hours:
        return None
    return Stop(TIME_BUDGET, _looks(_differences(rows), seed, _sequential_plan(settings)), seed, spent)


def run_retrain(run_dir: str | Path, top: int | None = None, seeds: int | str | None = None,
                recipe: str | None = None, epochs: int | None = None, baselines: bool = False, device: str = "auto",
                storage: str | None = None, overrides: dict[str, Any] | None = None,
                keep_checkpoints: bool = False, init: str | None = None, target: str | None = None,
                img_size: int | None = None, log: Callable[[str], None] = print, max_seeds: int | None = None,
                max_hours: float | None = None) -> pd.DataFrame:
    """Train every contender with every seed (resuming unfinished runs); return RETRAIN_DIR/results.csv's rows.

    `seeds`: a number, or "auto" (rounds until decided, at most `max_seeds`, none past `max_hours`).
    `target`, `img_size`: where to deploy the searched ramps (rampsearch.transfer.resolve_target)."""
    from .train import preflight

    run_dir = Path(run_dir)
    retrain_plan = plan(run_dir, {"top": top, "seeds": seeds, "recipe": recipe, "epochs": epochs,
                                  "overrides": overrides, "init": init, "max_seeds": max_seeds,
                                  "max_hours": max_hours}, baselines, storage, device, log, target,
                        img_size)
    space, settings = retrain_plan.space, retrain_plan.settings
    out = retrain_dir(run_dir, retrain_plan.target)

    def config(contender: Contender, seed: int) -> dict[str, Any]:
        inherited = out / contender.name / INIT_FILE if contender.init == SUPERNET else None
        return train_config(space, ModelSpec.from_dict(contender.spec), out / contender.name / f"seed{seed}",
                            device, epochs=settings.epochs, recipe=settings.recipe, seed=seed,
                            overrides=settings.overrides, keep_checkpoints=keep_checkpoints,
                            data_split=FINAL,  # retraining reports val; search trials scored on the search split
                            init=inherited)

    for contender in retrain_plan.contenders:  # every model, before anything trains
        preflight(config(contender, 0))
    out.mkdir(exist_ok=True)
    if settings.init == SUPERNET:
        _inherit(retrain_plan, out, device)
    if retrain_plan.search["sentence"]:
        log(f"note: {retrain_plan.search['sentence']}")
    measured = _earlier_throughput(out / "plan.json")
    for contender in retrain_plan.contenders:  # measured once: a rerun keeps what the first run measured
        key = json.dumps(contender.spec, sort_keys=True)
        contender.inference_img_s = measured.get(key) or round(
            inference_throughput(ModelSpec.from_dict(contender.spec)), 1)
    (out / "plan.json").write_text(json.dumps({
        "settings": settings.to_dict(), "commands": [" ".join(redact_command(sys.argv))],
        "search": retrain_plan.search, "target": retrain_plan.transfer,
        "contenders": [asdict(c) for c in retrain_plan.contenders]}, indent=2))
    auto = settings.seeds == AUTO
    rows: list[dict[str, Any]] = []
    stop: Stop | None = None
    (out / STOPPING).unlink(missing_ok=True)  # written anew by this run's rule, when it has one
    for seed in range(settings.max_seeds if auto else settings.seeds):  # rounds: one seed of every contender
        if auto and seed > 0:
            stop = _stop_before_round(rows, seed, settings)
            if stop is not None:
                break
        for contender in retrain_plan.contenders:
            rows.append(_train_seed(contender, seed, out / contender.name / f"seed{seed}", config, settings, log))
        if auto:
            stop = _stop_after_round(rows, seed + 1, settings)  # always a Stop at max_seeds
            if stop is not None:
                break
    if stop is not None:
        write_json(out / STOPPING, stop.to_dict(settings))
        log(f"seeds: auto stopped after {stop.seeds} seeds: {stop.sentence(settings)}")
    order = {c.name: i for i, c in enumerate(retrain_plan.contenders)}
    rows.sort(key=lambda row: (order[row["name"]], row["seed"]))  # results.csv: schedule by schedule
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    return frame
