"""What runs on a Ray worker: the trainable, and its checkpoint hand-off with Tune (rampsearch.search.ray_backend
says what is guaranteed)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ray import tune

from ...architecture import Architecture
from ...checkpoint import POINTER, RESULT, drop_checkpoint, read_json
from ...ramp import RampSchedule
from .. import methods
from ..methods import evaluate_candidate
from ..options import SearchOptions
from ..space import SearchSpace
from ..trial import trial_folder


def _copy_checkpoint(source: Path, dest: Path) -> None:
    """Copy the current training checkpoint of `source` (checkpoint.json and the files it names) to `dest`.

    Files are hard-linked where both sides share a filesystem (the training code never rewrites a
    file in place), else copied; checkpoint.json goes last, so `dest` never names missing files.
    """
    pointer = read_json(source / POINTER, "checkpoint")
    dest.mkdir(parents=True, exist_ok=True)
    for name in (pointer["model"], pointer["tensors"], POINTER):
        (dest / name).unlink(missing_ok=True)
        try:
            os.link(source / name, dest / name)
        except OSError:
            shutil.copyfile(source / name, dest / name)


def _trained_epochs(folder: Path) -> int:
    """How far the training in `folder` is: its result's epochs, its checkpoint's epoch, or 0."""
    if (folder / RESULT).is_file():
        return read_json(folder / RESULT, "training result")["epochs"]
    if (folder / POINTER).is_file():
        return read_json(folder / POINTER, "checkpoint")["epoch"]
    return 0


def _align_with_tune(folder: Path) -> None:
    """Make `folder`'s training resume after the last epoch Tune received.

    Tune restarts a retried trial's epoch count from its latest checkpoint, while training resumes
    from the folder's. They differ when the folder is missing (a retry on another node) or holds
    an epoch Tune never received (a failure between writing the checkpoint and reporting it). The
    folder then takes Tune's checkpoint (or none), so training calls on_epoch exactly for the
    epochs Tune has not seen (at most one epoch is trained again).
    """
    checkpoint = tune.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as directory:
        epoch = read_json(Path(directory) / POINTER, "checkpoint")["epoch"] if directory else 0
        if _trained_epochs(folder) != epoch:
            drop_checkpoint(folder)
            (folder / RESULT).unlink(missing_ok=True)
            if directory:
                _copy_checkpoint(Path(directory), folder)


@contextlib.contextmanager
def _staged_checkpoint(folder: Path) -> Iterator[tune.Checkpoint]:
    """The folder's current training checkpoint as a Tune checkpoint of its own directory.

    Tune copies a reported checkpoint's directory into its storage, so it gets a temporary
    directory (beside the folder, so that its files are hard links) holding only this epoch's files.
    """
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-tune-") as staging:
        _copy_checkpoint(folder, Path(staging))
        yield tune.Checkpoint.from_directory(staging)


def trainable(config: dict[str, Any], space: SearchSpace, run_dir: str, options: SearchOptions, threads: int,
               finished: frozenset[int]) -> None:
    """Train one trial, reporting each epoch to Tune with its checkpoint, the last once training is done
    (a method that reports no epochs, e.g. one-shot on the shared supernet: its one result, once).

    Tune ends a trial as soon as it has its last epoch (ASHA stops it at max_t), so that epoch is
    reported only after training has written its result and dropped its checkpoint; a finished
    trial needs no checkpoint. If the trial dies in between, its retry trains that epoch again.
    `finished`: the Optuna trials already finished when the driver started. Tune resumes one of
    them when it finished after Tune last saved its experiment; it is not trained (nor its files
    written) again.
    """
    if config["number"] in finished:
        return
    import torch

    torch.set_num_threads(threads)
    arch = Architecture.from_dict(config["architecture"])
    candidate = space.candidate(arch, RampSchedule(tuple(config["ramp"])), handset=config["handset"])
    folder = trial_folder(Path(run_dir), config["number"])
    _align_with_tune(folder)
    constants = {"gflops": candidate.flops / 1e9, "mparams": candidate.params / 1e6}
    last: dict[str, float] = {}
    method = methods.of_run(space, options)
    if not method.per_epoch:  # one-shot: the supernet's folder is on a disk every worker reads
        result = evaluate_candidate(space, candidate, Path(run_dir), config["number"], options, report=None)
        tune.report({**result["history"][-1], **constants})
        return

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == method.epochs(space):
            last.update(metrics, **constants, epoch=epoch)
            return
        with _staged_checkpoint(folder) as checkpoint:
            tune.report({**metrics, **constants, "epoch": epoch}, checkpoint=checkpoint)

    evaluate_candidate(space, candidate, Path(run_dir), config["number"], options, report)
    if last:  # empty when Tune had the last epoch already (training returned its stored result)
        tune.report(last)
