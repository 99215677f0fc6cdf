"""The Run metadata section: versions, hardware, settings and the commands that made the run."""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from typing import Any

import pandas as pd

from ...machine import cpu_model
from ...redact import redact
from .common import retrain_name


def metadata_section(doc, data, extra: dict[str, Any]) -> None:
    doc.section("Run metadata")
    search = json.loads((data.run_dir / "search.json").read_text()) if (data.run_dir / "search.json").exists() else {}
    versions = {}
    for package in ("torch", "torchvision", "timm", "optuna", "ray", "fvcore", "pandas", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    info = {
        "search space": data.space.source, "study": search.get("study"), "storage": redact(search.get("storage")),
        "backend": search.get("backend"), "search started": search.get("started"),
        "search seconds": search.get("seconds"), "sampler seed": data.space.search.seed,
        "retraining": retrain_name(data).long,
        "retraining settings": data.plan["settings"],
        "retraining seconds (sum over runs)": round(data.results["seconds"].sum(), 1),
        "hardware": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, {_gpu()}",
        "python": platform.python_version(),
        **{f"version {k}": v for k, v in versions.items()}, **extra,
    }
    doc.table(pd.DataFrame({"item": list(info), "value": [json.dumps(v) if isinstance(v, dict) else str(v)
                                                          for v in info.values()]}), "metadata")
    commands = [" ".join(search.get("command", []))] + data.plan.get("commands", [])
    doc.paragraph("Commands (storage passwords redacted):")
    doc.code("\n".join(redact(c) for c in commands if c))


def _gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
