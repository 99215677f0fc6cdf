"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class UserError(ValueError):
    """Bad input from the user; the message names what is wrong and what would be right."""


def read_yaml_mapping(path: str | Path, what: str, error: type[UserError] = UserError) -> dict[str, Any]:
    """The top-level mapping of a YAML (or JSON) file; `what` names the file in errors ("ramp file")."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a mapping of keys at the top level")
    return data
