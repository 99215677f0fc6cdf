"""Loading what a search works on: a space file, checked by its method, and a run directory's space and study.

Every space a search, a retraining, the report or export uses is loaded here: rampsearch.search.space
parses a space as written (it cannot know the methods: each method module reads spaces), and the method
registry completes it (`methods.checked`: the method exists, accepts the space, and gives the default
score). A run directory keeps the score its study was created with (`study.run_score`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from ..errors import UserError
from ..redact import redact
from . import methods
from .space import SearchSpace, parse_space_data, read_space
from .study import JOURNAL, open_storage, run_score, search_metadata


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read, validate and check a search-space YAML file; `overrides` (`--set`) go over its proxy.overrides."""
    return methods.checked(read_space(path, overrides))


def parse_space(data: Any, source: str = "<space>", default_name: str = "search",
                overrides: dict[str, Any] | None = None) -> SearchSpace:
    """`load_space` of a space already read into a mapping; errors name `source`."""
    return methods.checked(parse_space_data(data, source, default_name, overrides))


def load_run(run_dir: str | Path, storage: str | None = None) -> tuple[SearchSpace, optuna.Study]:
    """(space, study) of a search's run directory; an RDB study needs the same `storage` URL again."""
    run_dir = Path(run_dir)
    if not (run_dir / "space.yaml").is_file():
        raise UserError(f"{run_dir} is not a search run directory (no space.yaml); run `rampsearch search` first")
    meta = search_metadata(run_dir)
    space = load_space(run_dir / "space.yaml", meta.get("set"))
    space = space.with_score(run_score(run_dir) or space.search.score)
    if meta.get("storage_kind") == "rdb" and not storage:
        raise UserError(f"the study of {run_dir} lives in {meta['storage']}; pass the same --storage URL")
    if not storage and not (run_dir / JOURNAL).is_file():
        raise UserError(f"{run_dir} has no study yet ({JOURNAL} is missing); run `rampsearch search` first")
    name = meta.get("study", space.name)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(run_dir, storage))
    except KeyError:
        raise UserError(f"no study named {name!r} in {redact(storage) if storage else run_dir / JOURNAL}") from None
    return space, study
