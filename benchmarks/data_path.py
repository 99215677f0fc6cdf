"""The image-folder data path, timm's PIL transforms against the decoded proxy cache, side by side.

On a generated ImageFolder of full-size JPEGs (synthetic-freq images rendered at 128 px and resized to
500 x 375, the size of a typical ImageNet photo, so decoding costs what it costs on real data), it
measures in one run:

1. the cache's build time (cold: decoding every file once) and its open time (warm);
2. loader-only images per second over one training epoch at the proxy recipe's batch: timm's
   DataLoader with the recipe's worker processes (decode, random resized crop, flip, to tensor,
   normalize) against ImageBatches over the cache (gather rows, crop/flip/normalize batch-wise on
   `--device`);
3. end-to-end seconds per epoch of a nano proxy trial both ways (`train.fit`, the same recipe);
4. the trials' top-1 both ways over `--seeds` seeds, with the spread between seeds, to show the two
   paths train models of the same quality within seed noise.

    .venv/bin/python benchmarks/data_path.py                       # 2,000 JPEGs, CPU
    .venv/bin/python benchmarks/data_path.py --device cuda --json out.json
    .venv/bin/python benchmarks/data_path.py --images 200 --epochs 1 --seeds 1   # a smoke run

The data set and the cache go to a temporary folder (`--work` to keep them). Threads: torch uses
`--threads` (default: all cores), and timm's DataLoader its `workers` processes beside the main one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rampsearch.config import load_recipe  # noqa: E402
from rampsearch.data import ImageBatches, TensorImages, build_datasets, synthetic_freq  # noqa: E402
from rampsearch.machine import cpu_model, matmul_gflops  # noqa: E402
from rampsearch.train import fit  # noqa: E402

PHOTO = (500, 375)  # width x height of the generated JPEGs: a typical ImageNet photo
JPEG_QUALITY = 90
RENDER = 128  # synthetic-freq rendered at this size, then resized to PHOTO
VAL_SHARE = 0.2  # of the generated images, in val/


def make_folder(root: Path, images: int, low: int = 4, high: int = 4) -> Path:
    """`images` JPEGs of synthetic-freq's low x high classes in root/train and root/val (VAL_SHARE of them)."""
    if (root / "done").exists():
        return root
    pixels, labels = synthetic_freq(low, high, images, RENDER, 7, "train")
    for i, (image, label) in enumerate(zip(pixels.permute(0, 2, 3, 1).numpy(), labels.tolist())):
        split = "val" if i % round(1 / VAL_SHARE) == 0 else "train"
        path = root / split / f"class{label:02d}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize(PHOTO, Image.Resampling.BICUBIC).save(path, quality=JPEG_QUALITY)
    (root / "done").touch()
    return root


def loader_rate(root: Path, recipe, img_size: int, device: str) -> float:
    """Images per second of one shuffled pass over the training set as training loads it, nothing else."""
    data = build_datasets(str(root), recipe, img_size)
    sampler = RandomSampler(data.train, generator=torch.Generator().manual_seed(0))
    if isinstance(data.train, TensorImages):
        loader = ImageBatches(data.train, recipe.batch_size, device, (0, 0), sampler=sampler, drop_last=True)
    else:
        loader = DataLoader(data.train, batch_size=recipe.batch_size, sampler=sampler, drop_last=True,
                            num_workers=recipe.workers, pin_memory=device.startswith("cuda"))
    started, count = time.perf_counter(), 0
    for images, _ in loader:
        images = images.to(device, non_blocking=True)
        count += len(images)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def trial(root: Path, cache: str, seed: int, epochs: int, img_size: int, device: str) -> dict:
    result = fit({"variant": "nano", "img_size": img_size, "data": str(root), "epochs": epochs, "seed": seed,
                  "device": device, "quiet": True, "overrides": {"data_cache": cache}})
    per_epoch = [row["epoch_seconds"] for row in result.history]
    return {"cache": cache, "seed": seed, "top1": result.final["top1"], "loss": result.final["loss"],
            "epoch_seconds": statistics.median(per_epoch), "seconds": result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEGs to generate (train + val)")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--classes", default="4x4", metavar="LOWxHIGH",
                        help="synthetic-freq's layout x orientation classes (4x1: the layouts alone, which survive "
                             "the resizing; the fine gratings mostly do not)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each proxy trial")
    parser.add_argument("--seeds", type=int, default=2, help="proxy trials per path")
    parser.add_argument("--repeats", type=int, default=3, help="loader passes per path (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, help="keep the data set and cache here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="rampsearch-data-path-"))
    os.environ["RAMPSEARCH_CACHE_DIR"] = str(work / "cache")
    out: dict = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(),
                 "threads": args.threads, "device": args.device, "python": platform.python_version(),
                 "torch": torch.__version__, "images": args.images, "classes": args.classes, "photo": list(PHOTO),
                 "img_size": args.img_size}
    out["matmul_gflops"] = round(matmul_gflops(), 1)
    started = time.perf_counter()
    low, high = (int(n) for n in args.classes.split("x"))
    root = make_folder(work / f"photos-{args.classes}", args.images, low, high)
    out["generate_seconds"] = round(time.perf_counter() - started, 1)
    recipe = {cache: load_recipe("proxy", {"data_cache": cache}) for cache in ("off", "on")}
    started = time.perf_counter()
    build_datasets(str(root), recipe["on"], args.img_size)
    out["cache_build_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    build_datasets(str(root), recipe["on"], args.img_size)
    out["cache_open_seconds"] = round(time.perf_counter() - started, 2)
    cache_bytes = sum(f.stat().st_size for f in (work / "cache").rglob("*") if f.is_file())
    out["cache_mib"] = round(cache_bytes / 2**20, 1)
    out["source_mib"] = round(sum(f.stat().st_size for f in root.rglob("*.jpg")) / 2**20, 1)
    for cache in ("off", "on"):  # alternated, so that both see the same machine state
        rates = [loader_rate(root, recipe[cache], args.img_size, args.device) for _ in range(args.repeats)]
        out[f"loader_img_s_{cache}"] = round(statistics.median(rates), 1)
    out["loader_speedup"] = round(out["loader_img_s_on"] / out["loader_img_s_off"], 1)
    trials = [trial(root, cache, seed, args.epochs, args.img_size, args.device)
              for seed in range(args.seeds) for cache in ("off", "on")]
    out["trials"] = trials
    for cache in ("off", "on"):
        mine = [t for t in trials if t["cache"] == cache]
        out[f"epoch_seconds_{cache}"] = round(statistics.median(t["epoch_seconds"] for t in mine), 2)
        out[f"top1_{cache}"] = [round(t["top1"], 2) for t in mine]
    out["epoch_speedup"] = round(out["epoch_seconds_off"] / out["epoch_seconds_on"], 2)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
