"""User-facing errors: the CLI prints their message as one line (no traceback).

`UserError`: bad input (exit status 2); the message names what is wrong and what would be right.
`RunFailed`: the input was fine but the run did not reach its goal, e.g. every search trial failed
(exit status 1); the message says why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class UserError(ValueError):
    """Bad input from the user; the message names what is wrong and what would be right."""


class RunFailed(RuntimeError):
    """A run that achieved nothing it was asked for; the message gives the first reason."""


def read_yaml_mapping(path: str | Path, what: str, error: type[UserError] = UserError) -> dict[str, Any]:
    """The top-level mapping of a YAML (or JSON) file; `what` names the file in errors ("ramp file")."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not a text file (it is not UTF-8); expected YAML or JSON") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a mapping of keys at the top level")
    return data


def ensure_directory(path: str | Path, what: str) -> Path:
    """Create directory `path` (and its parents); a file in the way is a UserError naming it."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise UserError(f"{what} {path}: {part} is a file, not a directory; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be created: {exc.strerror}") from None
    return path
