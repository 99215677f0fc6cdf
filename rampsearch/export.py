"""Export: one retrained schedule as a folder timm loads like any of its own models.

`export_schedule(run_dir, out, schedule="best", seed=0)` writes OUT/config.json and OUT/model.safetensors
with timm's own writer (`timm.models.save_for_hf`), so after `import rampsearch` (which registers the
`inception_transformer_*` entrypoints)

    timm.create_model("local-dir:OUT", pretrained=True)

rebuilds the architecture and ramp from config.json's `model_args` and loads the weights; timm's
`push_to_hf_hub` shares it, and timm's train.py fine-tunes it (`--model local-dir:OUT --pretrained`).
The weights are those whose top-1 RETRAIN_DIR/results.csv reports (model.safetensors, not EMA), and
`pretrained_cfg` carries the retraining's own evaluation transform (input size, mean/std, crop_pct,
interpolation). Nothing is written unless the whole folder can be: it is built beside OUT and renamed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .checkpoint import RESULT, load_weights, read_json
from .errors import UserError
from .model_spec import IFORMER, ModelSpec, build_model
from .search.load import load_run
from .transfer import check_retraining_found, resolve_target, retrain_command, retrain_dir

MODEL_FILE = "model.safetensors"  # what a finished training leaves, and what timm's local-dir loader reads
CLASSIFIER = "head.weight"  # the iFormer's classifier: its rows are the classes


def _contender(plan: dict[str, Any], schedule: str, folder: Path) -> dict[str, Any]:
    by_name = {c["name"]: c for c in plan["contenders"]}
    if schedule not in by_name:
        raise UserError(f"--schedule {schedule!r}: {folder} retrained {sorted(by_name)}; choose one of those")
    contender = by_name[schedule]
    if contender["spec"].get("kind") != IFORMER:
        raise UserError(f"--schedule {schedule!r} is a ViT baseline, which timm builds itself; export an iFormer "
                        f"schedule ({', '.join(n for n, c in by_name.items() if c['spec'].get('kind') == IFORMER)})")
    return contender


def _num_classes(weights: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as tensors:
        return tensors.get_slice(CLASSIFIER).get_shape()[0]


def export_schedule(run_dir: str | Path, out: str | Path, schedule: str = "best", seed: int = 0,
                    target: str | None = None, img_size: int | None = None,
                    storage: str | None = None) -> dict[str, Any]:
    """Write schedule `schedule`'s seed-`seed` retraining (on `target`, rampsearch.transfer) as a timm folder `out`."""
    from timm.models import save_for_hf

    run_dir, out = Path(run_dir), Path(out)
    space, _ = load_run(run_dir, storage)
    folder = retrain_dir(run_dir, resolve_target(space, target, img_size))
    command = retrain_command(run_dir, target, img_size)
    check_retraining_found(run_dir, folder, target)
    if not (folder / "plan.json").is_file():
        raise UserError(f"{run_dir} has no retraining in {folder.name}/; run `{command}` first")
    contender = _contender(read_json(folder / "plan.json", "retraining plan"), schedule, folder)
    runs = folder / schedule / f"seed{seed}"
    if not (runs / RESULT).is_file():
        done = sorted(p.parent.name for p in (folder / schedule).glob(f"seed*/{RESULT}"))
        raise UserError(f"--seed {seed}: {schedule} has no finished retraining with that seed in {folder.name}/ "
                        f"(finished: {', '.join(done) or 'none'}); rerun `{command}` to finish it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not empty; choose another folder or delete it")
    spec = ModelSpec.from_dict(contender["spec"])
    model = build_model(spec, _num_classes(runs / MODEL_FILE))
    load_weights(runs / MODEL_FILE, model)  # verified against result.json's SHA-256
    recipe = read_json(runs / "config.json", "training config")["recipe"]
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, spec.img_size, spec.img_size),
                            "mean": tuple(recipe["mean"]), "std": tuple(recipe["std"]),
                            "crop_pct": recipe["crop_pct"], "interpolation": recipe["interpolation"]}
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_for_hf(model.eval(), str(staging), safe_serialization=True)
    if out.exists():
        out.rmdir()  # empty, checked above
    staging.rename(out)
    result = read_json(runs / RESULT, "training result")
    return {"out": str(out), "schedule": schedule, "seed": seed, "model": f"local-dir:{out.resolve()}",
            "architecture": spec.architecture.to_dict(), "ramp": list(spec.ramp.ratios), "img_size": spec.img_size,
            "num_classes": model.num_classes, "top1": result["top1"], "retraining": str(folder)}
