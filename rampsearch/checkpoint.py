"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON, every file checksummed.

A checkpoint of epoch E in an output directory is two tensor files named by a JSON record:

- `ckpt-E.model.safetensors`: the model's state_dict, loadable on its own (`load_weights`);
- `ckpt-E.state.safetensors`: every tensor of the training state (optimizer moments, EMA weights);
- its record in `checkpoint.json`: the epoch, the two file names, their SHA-256 (hex, "sha256") and
  sizes ("bytes"), and the rest of the training state (optimizer hyper-parameters, scheduler,
  history, ...) with each tensor replaced by {"__tensor__": key into the state file}.

`checkpoint.json` holds the current checkpoint's record at its top level ("epoch", "model",
"tensors", "sha256", "bytes", "state": all a copy of the current checkpoint needs) and, under
"previous", the record of epoch E-1, whose two files are kept as a fallback; older epochs' files are
deleted. A copy with only the current files simply has no previous checkpoint. (After a fallback the
pointer still names the damaged epoch until that epoch is written again, over it.)

Why: a file can be damaged after it was written (a full disk, a bad sector, a copy cut short), and
a damaged checkpoint must not resume into a result that looks fine but is not the run's.
`load_checkpoint` therefore verifies size, SHA-256 and format of the current checkpoint's files;
if one is damaged it logs a warning naming it and falls back to the previous checkpoint (verified
the same way), else it returns None and the training restarts from epoch 1. An unreadable
`checkpoint.json` also means a restart. Checkpoints written before checksums (no "sha256") are
only checked to parse.

Final weights (`model.safetensors`, `model_ema.safetensors`) are recorded the same way ("sha256",
"bytes") in the `result.json` beside them (rampsearch.train); `load_weights` verifies them and
raises a UserError for a damaged one, as a final model has no earlier version to fall back to.

Writing is crash-safe: the tensor files are written first (safetensors writes a new file and
renames it), then `checkpoint.json`, atomically (rename); so a process killed at any moment leaves
either the previous pointer or the new one, each naming complete files. Files the pointer no longer
names are deleted after the switch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError

log = logging.getLogger(__name__)

POINTER = "checkpoint.json"
RESULT = "result.json"  # beside final weights: records their checksums (written by rampsearch.train)
HASH_CHUNK_BYTES = 1 << 20  # files are read in pieces this big to hash them: weights can be GBs
RESTART = "no intact earlier checkpoint, so the training restarts from epoch 1"


class _Damaged(Exception):
    """A checkpoint or weights file that is missing, altered or unreadable; the message names it."""


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """JSON-able form of nested dicts/lists/tuples/tensors; tensors move into `tensors` under `path`."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous().clone()  # clone: no shared storage in the file
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        # optimizer state is keyed by parameter index
        return {"__items__": [[k, _encode(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def write_json(path: Path, data: Any) -> None:
    """Atomically replace `path` with `data` as JSON."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{"sha256": {name: hex}, "bytes": {name: size}} of files in `folder`, for the JSON that names them."""
    names = list(names)
    return {"sha256": {name: file_sha256(folder / name) for name in names},
            "bytes": {name: (folder / name).stat().st_size for name in names}}


def save_checkpoint(out: Path, epoch: int, model_state: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write epoch `epoch`'s checkpoint to `out` and make it the current one, epoch - 1's the previous one."""
    model_file, state_file = f"ckpt-{epoch}.model.safetensors", f"ckpt-{epoch}.state.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, "state")
    save_weights(out / model_file, model_state)
    _save_tensors(tensors, out / state_file)
    pointer = {"epoch": epoch, "model": model_file, "tensors": state_file,
               **file_digests(out, (model_file, state_file)), "state": encoded}
    # usually the pointer's current record; after a fallback, its previous one (the current one is damaged)
    previous = next((r for r in _existing_records(out) if r["epoch"] == epoch - 1), None)
    if previous is not None:
        pointer["previous"] = previous
    write_json(out / POINTER, pointer)
    kept = {model_file, state_file, *(_files(previous) if previous else ())}
    for old in out.glob("ckpt-*.safetensors"):
        if old.name not in kept:
            old.unlink()


def load_checkpoint(out: Path) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
    """(epoch, model state_dict, training state) of the newest intact checkpoint in `out`, or None.

    Tries the current checkpoint, then the previous one (see the module doc); a damaged file or an
    unreadable checkpoint.json is logged as a warning that names it and says what happens instead.
    """
    pointer = out / POINTER
    if not pointer.exists():
        return None
    try:
        records = _records(json.loads(pointer.read_text()))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        log.warning("%s is damaged (cannot be read: %s); %s", pointer, exc, RESTART)
        return None
    current, *older = records
    # the previous files are absent where only the current checkpoint was copied: no previous checkpoint
    records = [current] + [r for r in older if any((out / name).exists() for name in _files(r))]
    damage: list[str] = []
    for record in records:
        try:
            weights, state = _read_checkpoint(out, record)
        except _Damaged as exc:
            damage.append(str(exc))
            continue
        if damage:
            log.warning("%s; resuming from the previous checkpoint, epoch %d", "; ".join(damage), record["epoch"])
        return record["epoch"], weights, state
    log.warning("%s; %s", "; ".join(damage), RESTART)
    return None


def drop_checkpoint(out: Path) -> None:
    """Remove the resume state of `out` (checkpoint.json and its tensor files), pointer first."""
    (out / POINTER).unlink(missing_ok=True)
    for old in out.glob("ckpt-*.safetensors"):
        old.unlink()


def _records(meta: Any) -> list[dict[str, Any]]:
    """The checkpoint records in checkpoint.json's content, current first; ValueError if malformed."""
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    current = {k: v for k, v in meta.items() if k != "previous"}
    records = [current, meta["previous"]] if "previous" in meta else [current]
    for record in records:
        if not (isinstance(record, dict) and isinstance(record.get("epoch"), int) and "state" in record
                and all(isinstance(record.get(k), str) for k in ("model", "tensors"))
                and all(isinstance(record.get(k, {}), dict) for k in ("sha256", "bytes"))):
            raise ValueError("a checkpoint record lacks its epoch, file names or state")
    return records


def _existing_records(out: Path) -> list[dict[str, Any]]:
    """The records of `out`'s checkpoint.json, current first; none if it is missing or unreadable."""
    try:
        return _records(json.loads((out / POINTER).read_text()))
    except (OSError, ValueError):
        return []


def _files(record: Mapping[str, Any]) -> tuple[str, str]:
    """The model and state file names of a checkpoint record."""
    return record["model"], record["tensors"]


def _read_checkpoint(out: Path, record: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state_dict, training state) of a checkpoint record, its files verified; _Damaged if not intact."""
    weights, tensors = (_read_tensors(out / name, record) for name in _files(record))
    try:
        return weights, _decode(record["state"], tensors)
    except KeyError as exc:
        raise _Damaged(f"{out / record['tensors']} is damaged (it lacks the tensor {exc})") from None


def _read_tensors(path: Path, record: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of `path` after checking it against the size and SHA-256 `record` holds for it, if any."""
    if not path.is_file():
        raise _Damaged(f"{path} is missing")
    size, expected_size = path.stat().st_size, record.get("bytes", {}).get(path.name)
    if expected_size is not None and size != expected_size:
        raise _Damaged(f"{path} is damaged ("
                       + (f"truncated: {size} of {expected_size} bytes)" if size < expected_size
                          else f"{size} bytes, {expected_size} written)"))
    sha256 = record.get("sha256", {}).get(path.name)
    if sha256 is not None and file_sha256(path) != sha256:
        raise _Damaged(f"{path} is damaged (sha256 mismatch)")
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise _Damaged(f"{path} is damaged (not a readable safetensors file: {exc})") from None


def read_json(path: Path, what: str, fix: str = "delete it to start that run over") -> Any:
    """A JSON file rampsearch wrote; a damaged one is a UserError naming it and `fix`."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} {path} cannot be read ({exc}); {fix}") from None


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """A state_dict as a safetensors file (what `load_weights` reads)."""
    _save_tensors({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, path)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A safetensors file with the permissions of every other file we write.

    safetensors creates its files through a temporary file, which leaves them readable by their owner
    only (0600) while JSON, CSV and Parquet files get the usual mode of the umask (0644 under 022).
    """
    save_file(tensors, str(path))
    os.chmod(path, _FILE_MODE)


def _umask_file_mode() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_file_mode()


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    """Load a `*.model.safetensors` / `model.safetensors` file into `model` (strict).

    Where the result.json beside it records the file's SHA-256 (final weights), the file is verified
    first; a damaged or unreadable file is a UserError naming it.
    """
    path = Path(path)
    result = path.parent / RESULT
    record = read_json(result, "training result") if result.is_file() else {}
    try:
        weights = _read_tensors(path, record)
    except _Damaged as exc:
        rerun = f"delete {result} and run that training again" if result.is_file() else "run that training again"
        raise UserError(f"{exc}; final weights have no earlier version to fall back to: {rerun}") from None
    model.load_state_dict(weights)
