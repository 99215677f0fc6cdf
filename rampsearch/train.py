"""The one training function, `fit(config, on_epoch)`: search trials and full retraining alike.

It builds the model (any architecture and ramp through `build_iformer`, or a ViT baseline), the
data (rampsearch.data) and the recipe (rampsearch.config) from timm's parts: `create_optimizer_v2`
(no weight decay on 1-D parameters), `create_scheduler_v2` sized to this run's epochs, `Mixup` /
CutMix with `SoftTargetCrossEntropy`, label smoothing, drop path, gradient clipping, `ModelEmaV3`,
bf16 autocast, channels_last and optional `torch.compile`. After every epoch it evaluates top-1,
top-5 and loss and calls `on_epoch(epoch, metrics)`; raising `StopTraining` there ends the run
early (any other exception propagates, after the epoch's checkpoint is written).

Reproducibility: every random stream of an epoch (python, numpy, torch, the sampler's shuffle, the
DataLoader workers' seeds) is re-seeded at the epoch's start from (seed, epoch, rank). So a run is a
pure function of its config on CPU, and a checkpoint needs no raw generator states to resume
exactly: the epoch number and the seed are the RNG state. (Raw states would also differ per rank,
and only rank 0 writes.)

Output directory (`out`, optional): checkpoint.json + ckpt-E.*.safetensors (rampsearch.checkpoint),
metrics.csv (one row per epoch), and when done model.safetensors (+ model_ema.safetensors) and
result.json, which records their SHA-256 and sizes. Rerunning with the same config resumes from the
last intact checkpoint (or from scratch if there is none, after removing what the earlier run left).

Data-parallel: under `torchrun --nproc_per_node N` the same call trains with DDP (NCCL on GPUs,
gloo on CPU); `batch_size` and `lr` stay global, BatchNorm running statistics are averaged across
processes after every epoch, evaluation is sharded and reduced exactly, and only rank 0 writes files
and calls `on_epoch` (its decision is broadcast).
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .checkpoint import (RESULT, drop_checkpoint, file_digests, load_checkpoint, load_weights, read_json,
                         save_checkpoint, save_weights, write_json)
from .config import ConfigError, Recipe, TrainConfig, check_epochs, load_recipe
from .data import ImageBatches, TensorImages, build_datasets, check_data, data_identity
from .errors import UserError
from .model_spec import ModelSpec, build_model
from .ramp import RampSchedule
from .supernet import is_supernet, sandwich_backward

log = logging.getLogger(__name__)

OnEpoch = Callable[[int, dict[str, float]], Any]

# Config fields that do not change what is trained, so a checkpoint can resume under other values.
_RUNTIME_FIELDS = ("out", "device", "resume", "quiet", "recipe", "overrides", "keep_checkpoints")
_RUNTIME_RECIPE_KEYS = ("compile", "eval_batch_size")


# A finished run's weights (beside RESULT, which records their checksums).
MODEL_FILE, EMA_FILE = "model.safetensors", "model_ema.safetensors"

# Without a terminal (a log file, a CI job) there is no progress bar; a line this often instead. At
# the proxy recipe's batch of 64 that is every 3,200 images: a few lines a minute on a CPU.
PLAIN_LOG_EVERY_STEPS = 50
PLAIN_LOG_EVERY_SECONDS = 30  # or sooner: a slow epoch (a supernet's, on a CPU) still shows it is alive


class StopTraining(Exception):
    """Raised by an `on_epoch` callback to end the run after this epoch (e.g. a pruner's decision)."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    final: dict[str, float]  # metrics of the last epoch trained
    best: dict[str, float]  # metrics of the epoch with the best top-1
    history: list[dict[str, float]]  # one row per epoch, as in metrics.csv
    seconds: float  # wall-clock time of the whole run, resumed sessions included
    params: int
    img_s: float  # mean training throughput, images per second over all processes
    epochs: int  # epochs trained
    stopped: str | None = None  # the StopTraining message if on_epoch ended the run early
    out: str | None = None

    def summary(self) -> dict[str, Any]:
        """The final metrics and the run's totals, as `rampsearch train --json` prints them."""
        return {**self.final, "epochs": self.epochs, "seconds": round(self.seconds, 2), "params": self.params,
                "img_s": round(self.img_s, 1), "best_top1": self.best.get("top1"),
                "best_epoch": self.best.get("epoch"), "stopped": self.stopped}


@dataclass
class _Process:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # fit started the process group, so fit ends it

    @property
    def primary(self) -> bool:
        return self.rank == 0


def preflight(config: TrainConfig | Mapping[str, Any]) -> None:
    """Check what would make `config` fail before it trains: device, model, recipe, data and memory.

    Cheap (no data is loaded, no model is built), so a search runs it once before its first trial
    and retraining before its first run: a wrong `--device`, recipe key or data path stops there
    with one line, not after every trial has failed the same way.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    spec, recipe, _ = _resolve(cfg, resolve_device(cfg.device))
    check_data(cfg.data, recipe, spec.img_size, split=cfg.data_split)


def _resolve(cfg: TrainConfig, device: str) -> tuple[ModelSpec, Recipe, int]:
    """(model, recipe, epochs) of a run, checked: the recipe's keys, its length, memory for the image size."""
    spec = model_spec(cfg)
    recipe = load_recipe(cfg.recipe, cfg.overrides, spec.variant)
    epochs = recipe.epochs if cfg.epochs is None else cfg.epochs
    check_epochs(recipe, epochs)
    _check_activation_memory(spec, recipe.batch_size, device)
    return spec, recipe, epochs


# Refuses image sizes off by orders of magnitude, before anything is allocated. Training keeps about
# this many fp32 tensors of each block's output size for the backward pass (an upper-bound guess:
# norms, mixer branches, MLP hidden at 4x width); it is no exact memory model.
ACTIVATION_TENSORS_PER_BLOCK = 24


def _check_activation_memory(spec: ModelSpec, batch_size: int, device: str) -> None:
    """Refuse a model whose training activations at this batch and image size cannot fit this machine."""
    if spec.architecture is None:
        return
    arch, size = spec.architecture, spec.img_size
    elements = sum(depth * width * (size // (4 * 2 ** s)) ** 2
                   for s, (depth, width) in enumerate(zip(arch.depths, arch.embed_dims)))
    needed = 4 * ACTIVATION_TENSORS_PER_BLOCK * batch_size * elements
    available = (torch.cuda.get_device_properties(torch.device(device)).total_memory if device.startswith("cuda")
                 else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    if needed > available:
        raise ConfigError(f"img_size {size} with batch_size {batch_size} needs about {needed / 2**30:,.0f} GiB for "
                          f"training activations, more than this {device}'s {available / 2**30:,.0f} GiB; "
                          "lower --img-size or batch_size (--set batch_size=N)")


def fit(config: TrainConfig | Mapping[str, Any], on_epoch: OnEpoch | None = None) -> TrainResult:
    """Train (or resume) the run `config` describes and return its metrics; see the module doc."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    proc = _start_process(cfg.device)
    try:
        return _fit(cfg, proc, on_epoch)
    finally:
        if proc.owns_group:
            dist.destroy_process_group()


# -- setup -------------------------------------------------------------------------------------------

def resolve_device(device: str) -> str:
    """'auto' (cuda when a GPU is there, else cpu), 'cpu', 'cuda' or 'cuda:N', checked against this machine."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device != "cpu" and not match:
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if match:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu "
                              "(or auto)")
        if match[1] is not None and int(match[1]) >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def _start_process(device: str) -> _Process:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device)
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return _Process(rank, world, torch.device(device), owns)


def _reseed(*keys: int) -> None:
    """Seed python, numpy and torch from a stream of `keys` (e.g. seed, epoch, rank)."""
    state = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint64)
    random.seed(int(state[0]))
    np.random.seed(int(state[0]) % 2**32)
    torch.manual_seed(int(state[1]) % 2**63)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    supported = (torch.cuda.is_bf16_supported() if device.type == "cuda"
                 else torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if amp == "bf16" and not supported:
        raise ConfigError(f"amp: bf16 is not supported on {device}; use amp: auto or off")
    return torch.bfloat16 if supported else None


def model_spec(cfg: TrainConfig) -> ModelSpec:
    """The model a run trains: its variant or architecture with its ramp, or its ViT baseline."""
    from .architecture import VARIANTS, Architecture
    from .ramp import load_ramp, resolve_ramp

    if cfg.supernet is not None:
        from .supernet import SupernetSpec

        supernet = SupernetSpec.from_dict(cfg.supernet)
        return ModelSpec(cfg.img_size or supernet.img_size, supernet=supernet)
    if cfg.baseline is not None:
        from .baselines import BaselineSpec

        vit = BaselineSpec(**cfg.baseline)
        return ModelSpec(cfg.img_size or vit.img_size, vit=vit)
    if (cfg.variant is None) == (cfg.architecture is None):
        raise ConfigError("give exactly one of `variant` and `architecture` (or a `baseline`)")
    arch = (Architecture.resolve(cfg.variant) if cfg.variant
            else Architecture.from_dict(cfg.architecture))
    ramp = load_ramp(cfg.ramp, arch) if isinstance(cfg.ramp, str) else resolve_ramp(cfg.ramp, arch)
    return ModelSpec.iformer(arch, ramp, cfg.img_size or (VARIANTS[arch.variant].img_size if arch.variant else 224))


def _description(spec: ModelSpec) -> dict[str, Any]:
    """What identifies the model in a checkpoint."""
    if spec.vit is not None:
        return {"baseline": dataclasses.asdict(spec.vit)}
    if spec.supernet is not None:
        return {"supernet": spec.supernet.to_dict()}
    return {"architecture": spec.architecture.to_dict(), "ramp": list(spec.ramp.ratios)}


def _loaders(data, recipe: Recipe, proc: _Process, seed: int, generator: torch.Generator):
    """(train loader, its sampler, val loader) for this process's share of the data: ImageBatches for
    uint8 sets (synthetic-freq, a cached folder), timm's DataLoader path for the others."""
    from timm.data.distributed_sampler import RepeatAugSampler

    if recipe.batch_size % proc.world:
        raise ConfigError(f"batch_size {recipe.batch_size} (global) does not split evenly over "
                          f"{proc.world} processes")
    per_process = recipe.batch_size // proc.world
    if (recipe.mixup > 0 or recipe.cutmix > 0) and per_process % 2:
        raise ConfigError(f"mixup/cutmix need an even batch per process, got {per_process}")
    if len(data.train) < recipe.batch_size:
        raise ConfigError(f"the training set has {len(data.train)} images, fewer than one batch "
                          f"({recipe.batch_size}); lower batch_size")
    if recipe.aug_repeats > 0:
        sampler = RepeatAugSampler(data.train, num_replicas=proc.world, rank=proc.rank,
                                   num_repeats=recipe.aug_repeats)
    else:
        sampler = DistributedSampler(data.train, num_replicas=proc.world, rank=proc.rank, shuffle=True,
                                     seed=seed)  # shuffles by (seed, epoch): set_epoch in _fit
    shard = range(proc.rank, len(data.val), proc.world)  # no padding: exact metrics
    eval_batch = recipe.eval_batch_size or per_process
    if isinstance(data.train, TensorImages):  # in memory or memory-mapped: batched and augmented on the device
        train = ImageBatches(data.train, per_process, proc.device, (seed, proc.rank), sampler=sampler, drop_last=True)
        val = ImageBatches(data.val, eval_batch, proc.device, (seed, proc.rank), sampler=shard)
        return train, sampler, val
    pin = proc.device.type == "cuda"
    train = DataLoader(data.train, batch_size=per_process, sampler=sampler, num_workers=recipe.workers, drop_last=True,
                       pin_memory=pin, generator=generator, persistent_workers=False)
    val = DataLoader(Subset(data.val, shard), batch_size=eval_batch, shuffle=False, num_workers=recipe.workers,
                     pin_memory=pin)
    return train, sampler, val


# -- training ------------------------------------------------------------------------------------------

def _decay_groups(net: nn.Module, weight_decay: float) -> nn.Module | list[dict[str, Any]]:
    """What the optimizer decays: for an iFormer, every parameter but the 1-D ones, position embeddings
    included, as the official runs did (their `no_weight_decay` named parameters that do not exist,
    reference §8.5; the model's own now names pos_embed1-4 for timm users, and training keeps the
    official recipe); any other model by timm's rule (1-D parameters and its `no_weight_decay`)."""
    from timm.optim import param_groups_weight_decay

    from .models import InceptionTransformer

    return param_groups_weight_decay(net, weight_decay) if isinstance(net, InceptionTransformer) else net


def _share_initial_weights(net: nn.Module, spec: ModelSpec, num_classes: int, drop_path: float, seed: int) -> int:
    """Start an iFormer where the hand-set ramp of its architecture starts with `seed`: every parameter and
    buffer of equal name and shape (stem, norms, MLPs, head, the mixers' parts the ramp leaves alone) is
    copied from that model, built as `fit` builds it (after _reseed(seed, 0)). Two ramps trained with one
    seed then differ by their ramp, not by their random draw, and their paired difference is less noisy.
    Nothing changes for the hand-set ramp itself, ViT baselines and supernets. Returns the tensors copied."""
    if spec.architecture is None:
        return 0
    handset = RampSchedule.handset(spec.architecture)
    if spec.ramp == handset:
        return 0
    _reseed(seed, 0)
    reference = build_model(dataclasses.replace(spec, ramp=handset), num_classes, drop_path).state_dict()
    own = net.state_dict()
    shared = {name: tensor for name, tensor in reference.items()
              if name in own and own[name].shape == tensor.shape}
    net.load_state_dict(shared, strict=False)
    return len(shared)


class _Trainer:
    """The model and everything that updates it: optimizer, lr schedule, EMA, mixup and loss."""

    def __init__(self, spec: ModelSpec, recipe: Recipe, num_classes: int, steps: int, epochs: int,
                 proc: _Process, seed: int) -> None:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import ModelEmaV3

        self.recipe, self.proc, self.steps, self.seed = recipe, proc, steps, seed
        self.net = build_model(spec, num_classes, recipe.drop_path)
        if recipe.shared_init:
            _share_initial_weights(self.net, spec, num_classes, recipe.drop_path, seed)
        self.net = self.net.to(proc.device)
        self.supernet = is_supernet(self.net)  # trained by the sandwich rule (rampsearch.supernet)
        if recipe.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = ModelEmaV3(self.net, decay=recipe.ema_decay) if recipe.ema_decay else None
        self.model: nn.Module = self.net  # what the training step calls: maybe DDP-wrapped and compiled
        if proc.world > 1:
            on_gpu = proc.device.type == "cuda"
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[proc.device.index] if on_gpu else None,
                find_unused_parameters=self.supernet)  # a sub-network leaves dropped blocks unused
        if recipe.compile and self.supernet:  # every sub-network has other shapes: it would recompile each step
            log.info("compile: not applied to a supernet")
        elif recipe.compile:
            self.model = torch.compile(self.model)
        self.optimizer = create_optimizer_v2(_decay_groups(self.net, recipe.weight_decay), opt=recipe.opt,
                                             lr=recipe.lr, weight_decay=recipe.weight_decay, eps=recipe.opt_eps,
                                             betas=tuple(recipe.opt_betas))
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=recipe.sched, num_epochs=epochs - recipe.cooldown_epochs,
            warmup_epochs=recipe.warmup_epochs, warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr,
            cooldown_epochs=recipe.cooldown_epochs, step_on_epochs=recipe.sched_on_epochs, updates_per_epoch=steps)
        mixing = recipe.mixup > 0 or recipe.cutmix > 0
        self.mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=recipe.mixup_prob,
                           switch_prob=recipe.mixup_switch_prob, mode=recipe.mixup_mode,
                           label_smoothing=recipe.smoothing, num_classes=num_classes) if mixing else None
        self.criterion = (SoftTargetCrossEntropy() if mixing
                          else nn.CrossEntropyLoss(label_smoothing=recipe.smoothing))
        self.amp = amp_dtype(recipe.amp, proc.device)

    def train_epoch(self, loader: DataLoader, epoch: int, bar, plain_log: bool) -> tuple[float, float, float]:
        """One pass over `loader`; (mean training loss over all processes, seconds, last lr used).

        With `plain_log` (output is not a terminal, so there is no bar), a log line every
        PLAIN_LOG_EVERY_STEPS steps or PLAIN_LOG_EVERY_SECONDS, whichever comes first, says how far the epoch is.
        """
        from timm.utils import distribute_bn

        recipe, device = self.recipe, self.proc.device
        self.model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        started = last_line = time.perf_counter()
        for step, (images, target) in enumerate(loader):
            images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if recipe.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if self.mixup:
                images, target = self.mixup(images, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._backward(images, target, (self.seed, epoch, step))
            if recipe.clip_grad:
                nn.utils.clip_grad_norm_(self.net.parameters(), recipe.clip_grad)
            self.optimizer.step()
            updates = epoch * self.steps + step + 1
            self.scheduler.step_update(num_updates=updates)
            if self.ema:
                self.ema.update(self.net, step=updates)
            loss_sum += loss  # no .item(): a GPU would wait for every step
            bar.update(1)
            img_s = (step + 1) * recipe.batch_size / (time.perf_counter() - started)
            bar.set_postfix_str(f"{img_s:.0f} img/s")
            if plain_log and ((step + 1) % PLAIN_LOG_EVERY_STEPS == 0
                              or time.perf_counter() - last_line >= PLAIN_LOG_EVERY_SECONDS):
                last_line = time.perf_counter()
                log.info("epoch %d step %d/%d  %.0f img/s", epoch + 1, step + 1, self.steps, img_s)
        seconds = time.perf_counter() - started
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step(epoch + 1)
        if self.proc.world > 1:
            dist.all_reduce(loss_sum)
            for module in (self.net, self.ema.module) if self.ema else (self.net,):
                distribute_bn(module, self.proc.world, reduce=True)  # average BatchNorm running stats
        return loss_sum.item() / (self.steps * self.proc.world), seconds, lr

    def _backward(self, images: torch.Tensor, target: torch.Tensor, key: tuple[int, int, int]) -> torch.Tensor:
        """This step's gradients (not yet applied); returns its detached loss. A supernet trains the
        sandwich of sub-networks `key` (seed, epoch, step) picks."""
        autocast = lambda: torch.autocast(self.proc.device.type, dtype=self.amp,  # noqa: E731
                                          enabled=self.amp is not None)
        if self.supernet:
            return sandwich_backward(self.model, self.net, images, target, self.criterion, autocast, key)
        with autocast():
            loss = self.criterion(self.model(images), target)
        loss.backward()
        return loss.detach()

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        metrics = _evaluate(self.net, loader, self.proc, self.amp, self.recipe.channels_last)
        if self.ema:
            ema = _evaluate(self.ema.module, loader, self.proc, self.amp, self.recipe.channels_last)
            metrics.update({f"ema_{k}": v for k, v in ema.items()})
        return metrics

    def state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema else None}

    def restore(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.net.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema:
            self.ema.module.load_state_dict(state["ema"])


def _fit(cfg: TrainConfig, proc: _Process, on_epoch: OnEpoch | None) -> TrainResult:
    session_start = time.perf_counter()
    spec, recipe, epochs = _resolve(cfg, str(proc.device))
    seed = recipe.seed if cfg.seed is None else cfg.seed
    identity = _identity(cfg, recipe, spec, epochs, seed)
    out = Path(cfg.out) if cfg.out else None
    if out and cfg.resume:
        _check_same_run(out, identity)
        finished = _finished_result(out)
        if finished is not None:
            if proc.primary:
                log.info("%s holds this run's finished result; not training again", out)
            return finished
    resumed = load_checkpoint(out) if out and cfg.resume else None

    data = build_datasets(cfg.data, recipe, spec.img_size, split=cfg.data_split, device=str(proc.device))
    generator = torch.Generator()
    train_loader, sampler, val_loader = _loaders(data, recipe, proc, seed, generator)
    steps = len(train_loader)
    _reseed(seed, 0)  # the same initial weights on every process
    trainer = _Trainer(spec, recipe, data.num_classes, steps, epochs, proc, seed)
    if cfg.init and not resumed:
        load_weights(cfg.init, trainer.net)  # inherited weights (a resumed run has its own)
    history: list[dict[str, float]] = []
    start_epoch, earlier_seconds = 0, 0.0
    if resumed:
        start_epoch, weights, state = resumed
        trainer.restore(weights, state)
        history, earlier_seconds = state["history"], state["seconds"]
        if proc.primary:
            log.info("resuming %s after epoch %d of %d", out, start_epoch, epochs)
    if out and proc.primary:
        out.mkdir(parents=True, exist_ok=True)
        if not resumed:  # starting over (--no-resume, no intact checkpoint): what an earlier run left must go
            drop_checkpoint(out)
            for name in (RESULT, MODEL_FILE, EMA_FILE):
                (out / name).unlink(missing_ok=True)
        write_json(out / "config.json", identity)

    stopped = None
    bar = _progress_bar(cfg.quiet or not proc.primary, epochs * steps, start_epoch * steps)
    plain_log = proc.primary and not cfg.quiet and not sys.stderr.isatty()
    for epoch in range(start_epoch, epochs):
        _reseed(seed, 1, epoch, proc.rank)
        sampler.set_epoch(epoch)
        if isinstance(train_loader, ImageBatches):
            train_loader.set_epoch(epoch)  # its augmentation draws
        generator.manual_seed(torch.initial_seed())  # this epoch's DataLoader worker seeds
        bar.set_description(f"epoch {epoch + 1}/{epochs}")
        started = time.perf_counter()
        train_loss, train_seconds, lr = trainer.train_epoch(train_loader, epoch, bar, plain_log)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
               **trainer.evaluate(val_loader), "train_seconds": round(train_seconds, 3),
               "img_s": round(steps * recipe.batch_size / train_seconds, 1),
               "epoch_seconds": round(time.perf_counter() - started, 3)}
        history.append(row)
        if proc.primary:
            bar.clear()  # the log line goes above the bar, not into it
            log.info("epoch %d/%d  train_loss %.4f  loss %.4f  top1 %.2f  top5 %.2f  lr %.2e  %.0f img/s", epoch + 1,
                     epochs, row["train_loss"], row["loss"], row["top1"], row["top5"], row["lr"], row["img_s"])
            bar.refresh()
        if out and proc.primary:
            seconds = earlier_seconds + time.perf_counter() - session_start
            save_checkpoint(out, epoch + 1, trainer.net.state_dict(),
                            {"identity": identity, **trainer.state(), "history": history, "seconds": seconds})
            _write_csv(out / "metrics.csv", history)
        stopped = _after_epoch(on_epoch, epoch + 1, row, proc)
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training diverged: the train loss is {train_loss} after epoch "
                                   f"{epoch + 1}; lower lr (now {recipe.lr:g}) or set clip_grad")
        if stopped:
            break
    bar.close()

    params = sum(p.numel() for p in trainer.net.parameters())
    result = _result(history, earlier_seconds + time.perf_counter() - session_start, params, stopped, out)
    if out and proc.primary:
        save_weights(out / MODEL_FILE, trainer.net.state_dict())
        if trainer.ema:
            save_weights(out / EMA_FILE, trainer.ema.module.state_dict())
        weights = (MODEL_FILE, EMA_FILE) if trainer.ema else (MODEL_FILE,)
        write_json(out / RESULT, {**result.summary(), "history": history, **file_digests(out, weights)})
        if not cfg.keep_checkpoints:
            drop_checkpoint(out)  # the run is complete: model.safetensors and result.json are what is kept
    return result


def evaluate(model: nn.Module, loader: DataLoader | list, device: str | torch.device = "cpu",
             amp: str = "off", per_image: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) of `model` over `loader`'s (images, target) batches on one process,
    with the standard errors of loss and top-1 over images; `amp` as the recipe key (auto: bf16 where
    supported). `per_image`, if given, receives each batch's (loss, top-1 hit) per image, on the CPU."""
    device = torch.device(device)
    return _evaluate(model, loader, _Process(0, 1, device, False), amp_dtype(amp, device), False, per_image)


@torch.no_grad()
def _evaluate(model: nn.Module, loader: DataLoader, proc: _Process, amp: torch.dtype | None,
              channels_last: bool, per_image: list | None = None) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the whole val set, summed exactly across processes, and the
    standard errors of loss and top-1 over its images (from the sums of squares: no image kept)."""
    model.eval()
    # loss sum, loss sum of squares, top-1, top-5, count (top-1 hits are 0/1: their squares are themselves)
    totals = torch.zeros(5, dtype=torch.float64, device=proc.device)
    for images, target in loader:
        images, target = images.to(proc.device, non_blocking=True), target.to(proc.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(proc.device.type, dtype=amp, enabled=amp is not None):
            logits = model(images).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == target.unsqueeze(1)
        losses = F.cross_entropy(logits, target, reduction="none").double()
        totals += torch.stack([losses.sum(), losses.square().sum(), hits[:, 0].sum(), hits.any(dim=1).sum(),
                               torch.tensor(len(target))]).to(totals)
        if per_image is not None:
            per_image.append((losses.cpu(), hits[:, 0].double().cpu()))
    if proc.world > 1:
        dist.all_reduce(totals)
    loss, loss_sq, top1, top5, count = totals.tolist()
    return {"loss": loss / count, "top1": 100 * top1 / count, "top5": 100 * top5 / count,
            "loss_se": _standard_error(loss, loss_sq, count), "top1_se": 100 * _standard_error(top1, top1, count)}


def _standard_error(total: float, total_sq: float, count: float) -> float:
    """The standard error of a mean over `count` values from their sum and sum of squares (0 for one value)."""
    if count < 2:
        return 0.0
    variance = max(total_sq - total * total / count, 0.0) / (count - 1)
    return math.sqrt(variance / count)


def _after_epoch(on_epoch: OnEpoch | None, epoch: int, row: dict[str, float], proc: _Process) -> str | None:
    """Call on_epoch on rank 0; every process learns whether to stop (or that rank 0 failed)."""
    stop, error = None, None
    if on_epoch and proc.primary:
        try:
            on_epoch(epoch, dict(row))
        except StopTraining as exc:
            stop = str(exc) or "stopped by on_epoch"
        except BaseException as exc:  # re-raised below, after telling the other processes
            error = exc
    if proc.world > 1:
        decision = torch.tensor([2 if error is not None else int(stop is not None)], device=proc.device)
        dist.broadcast(decision, src=0)
        if decision.item() == 2 and not proc.primary:
            raise RuntimeError(f"rank 0's on_epoch callback failed after epoch {epoch}")
        if decision.item() == 1 and not proc.primary:
            stop = "stopped by on_epoch on rank 0"
    if error is not None:
        raise error
    return stop


# -- bookkeeping ---------------------------------------------------------------------------------------

def _identity(cfg: TrainConfig, recipe: Recipe, spec: ModelSpec, epochs: int, seed: int) -> dict[str, Any]:
    """Everything that determines the trained weights; a checkpoint resumes only under the same."""
    run = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUNTIME_FIELDS}
    run.update(_description(spec), epochs=epochs, seed=seed, img_size=spec.img_size,
               data=data_identity(cfg.data))
    run.pop("variant")  # the architecture says it
    return {**run, "recipe": {k: v for k, v in recipe.to_dict().items() if k not in _RUNTIME_RECIPE_KEYS}}


def _check_same_run(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to train into `out` if it holds another run (finished or not): nothing of it may be lost."""
    config_file = out / "config.json"  # written when a run starts, before its first checkpoint
    saved = read_json(config_file, "training config") if config_file.is_file() else None
    if saved is None or saved == identity:
        return
    changed = sorted(k for k in {*saved, *identity} if saved.get(k) != identity.get(k))
    if "recipe" in changed:
        changed.remove("recipe")
        changed += [f"recipe.{k}" for k in sorted(identity["recipe"])
                    if saved.get("recipe", {}).get(k) != identity["recipe"][k]]
    raise ConfigError(f"{out} holds a different run (differs in {', '.join(changed)}); use another output "
                      "directory, or resume=false (--no-resume) to start over there")


def _finished_result(out: Path) -> TrainResult | None:
    """The stored result of the run in `out` if it completed earlier, else None."""
    result_file = out / RESULT
    if not result_file.is_file():
        return None
    stored = read_json(result_file, "training result")
    return _result(stored["history"], stored["seconds"], stored["params"], stored.get("stopped"), out)


# What a result's `final` keeps of the last epoch (the standard errors are missing from runs before 0.2).
FINAL_METRICS = ("top1", "top5", "loss", "train_loss", "loss_se", "top1_se")


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        columns = list(dict.fromkeys(k for row in history for k in row))  # rows of an older run may lack some
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def _result(history: list[dict[str, float]], seconds: float, params: int, stopped: str | None,
            out: Path | None) -> TrainResult:
    if not history:
        raise ConfigError("no epoch was trained")
    best = max(history, key=lambda row: row["top1"])
    img_s = sum(row["img_s"] for row in history) / len(history)
    final = {k: history[-1][k] for k in FINAL_METRICS if k in history[-1]}
    return TrainResult(final, dict(best), history, seconds, params, img_s, len(history), stopped,
                       str(out) if out else None)


def _progress_bar(disabled: bool, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", file=sys.stderr, dynamic_ncols=True,
                disable=disabled or not sys.stderr.isatty())
