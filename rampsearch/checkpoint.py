"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A checkpoint of epoch E in an output directory is three files:

- `ckpt-E.model.safetensors`: the model's state_dict, loadable on its own (`load_weights`);
- `ckpt-E.state.safetensors`: every tensor of the training state (optimizer moments, EMA weights);
- `checkpoint.json`: the rest of the training state (epoch, optimizer hyper-parameters, scheduler,
  history, ...) with each tensor replaced by {"__tensor__": key into the state file}.

`checkpoint.json` is written last and atomically (rename), and names its two tensor files; so a
process killed at any moment leaves either the previous checkpoint or the new one, never a mix.
Older epochs' files are deleted after the switch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError

POINTER = "checkpoint.json"


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


def save_checkpoint(out: Path, epoch: int, model_state: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write epoch `epoch`'s checkpoint to `out` and make it the current one."""
    model_file, state_file = f"ckpt-{epoch}.model.safetensors", f"ckpt-{epoch}.state.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, "state")
    save_weights(out / model_file, model_state)
    _save_tensors(tensors, out / state_file)
    write_json(out / POINTER, {"epoch": epoch, "model": model_file, "tensors": state_file, "state": encoded})
    for old in out.glob("ckpt-*.safetensors"):
        if old.name not in (model_file, state_file):
            old.unlink()


def load_checkpoint(out: Path) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
    """(epoch, model state_dict, training state) of the current checkpoint in `out`, or None."""
    pointer = out / POINTER
    if not pointer.exists():
        return None
    meta = read_json(pointer, "checkpoint")
    tensors = load_file(str(out / meta["tensors"]))
    return meta["epoch"], load_file(str(out / meta["model"])), _decode(meta["state"], tensors)


def drop_checkpoint(out: Path) -> None:
    """Remove the resume state of `out` (checkpoint.json and its tensor files), pointer first."""
    (out / POINTER).unlink(missing_ok=True)
    for old in out.glob("ckpt-*.safetensors"):
        old.unlink()


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
    """Load a `*.model.safetensors` / `model.safetensors` file into `model` (strict)."""
    model.load_state_dict(load_file(str(path)))
