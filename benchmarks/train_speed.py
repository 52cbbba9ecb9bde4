"""Training speed of MetaQAP base models: images/s per backbone, fp32 against bf16 autocast, and with the decoded
image cache against decoding every JPEG on every epoch.

For each backbone (a one-backbone MetaQAPModel, random init: speed does not depend on the weights) and each
combination it times full training steps (load + augment + forward + backward + AdamW) over the same images,
and separately the input pipeline alone (load + augment + collate, no model), which isolates what the cache saves.
Prints a table and writes JSON.

    python benchmarks/train_speed.py --output train_speed.json                  # the four lite backbones
    python benchmarks/train_speed.py --data-dir /data/BIQ2021 --workers 2       # real BIQ2021 JPEGs
    python benchmarks/train_speed.py --input-only --data-dir /data/BIQ2021      # cache against decoding only
    python benchmarks/train_speed.py --quick                                    # tiny models, a few seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from metaqap_hf import LITE_BACKBONES, MetaQAPImageProcessor
from metaqap_hf.factory import create_model
from metaqap_hf.training.data import (
    DecodedImages,
    QualityAugmentation,
    QualityDataCollator,
    QualityImageDataset,
    build_image_cache,
)

QUICK_BACKBONES = [{"name": "test_efficientnet", "image_size": 64}, {"name": "test_resnet", "image_size": 64}]


def _generated_jpegs(folder: Path, count: int, size: int) -> list[str]:
    """Smooth random photos with noise, saved as JPEG (quality 90): realistic decoding cost without a dataset."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for index in range(count):
        phase = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(6 * xx + phase[0]), np.cos(5 * yy + phase[1]), np.sin(4 * (xx + yy) + phase[2])], -1)
        pixels = (0.5 + 0.35 * base + rng.normal(0, 0.05, base.shape)).clip(0, 1)
        path = folder / f"generated_{index:04d}.jpg"
        Image.fromarray((pixels * 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def _dataset_images(data_dir: str, count: int):
    from metaqap_hf.data import image_column, load_biq2021

    return image_column(load_biq2021(data_dir, validation_fraction=0.0)["train"].select(range(count)))


def _batches(loader: DataLoader):
    """Batches forever, one epoch after another (the augmentation epoch advancing as in training)."""
    for epoch in itertools.count():
        loader.dataset.set_epoch(epoch)
        yield from loader


def _input_images_per_second(loader: DataLoader, num_batches: int) -> float:
    batches = _batches(loader)
    next(batches)  # warm-up: worker start, first decode
    start = time.perf_counter()
    images = sum(len(next(batches)["labels"]) for _ in range(num_batches))
    return images / (time.perf_counter() - start)


def _training_images_per_second(model: MetaQAPModel, loader: DataLoader, steps: int, bf16: bool,
                                 device: torch.device) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    batches = _batches(loader)

    def step() -> int:
        batch = {key: value.to(device, non_blocking=True) for key, value in next(batches).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(batch["labels"])

    step()  # warm-up: kernel selection, allocator, lazy initialisation
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    images = sum(step() for _ in range(steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="BIQ2021 folder; default: generated 512x512 JPEGs")
    parser.add_argument("--images", type=int, default=64, help="number of distinct images to cycle through")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny test backbones and images: a smoke run")
    parser.add_argument("--input-only", action="store_true", help="time the input pipeline only, no training")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch_size, args.steps = 8, 4, 2
    image_size = 128 if args.quick else 512
    backbones = QUICK_BACKBONES if args.quick else [dict(spec) for spec in LITE_BACKBONES]
    if args.input_only:
        backbones = []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    processor = MetaQAPImageProcessor(size={"height": image_size, "width": image_size})

    with tempfile.TemporaryDirectory() as scratch:
        if args.data_dir:
            paths = _dataset_images(args.data_dir, args.images)
        else:
            paths = _generated_jpegs(Path(scratch), args.images, image_size)
        labels = np.linspace(0.2, 0.8, len(paths)).tolist()
        start = time.perf_counter()
        cache = build_image_cache(paths, processor, num_workers=args.workers, desc="building the cache")
        cache_seconds = time.perf_counter() - start
        sources = {"cache": cache, "decode": DecodedImages(paths, processor)}
        loaders = {
            name: DataLoader(QualityImageDataset(source, labels, augmentation=QualityAugmentation()),
                             batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                             collate_fn=QualityDataCollator(processor.rescale_factor))
            for name, source in sources.items()
        }
        input_speed = {name: _input_images_per_second(loader, args.steps) for name, loader in loaders.items()}

        rows = []
        for spec in backbones:
            torch.manual_seed(0)
            model = create_model([spec], pretrained=False).to(device)  # speed does not depend on the weights
            for precision, source in itertools.product(("fp32", "bf16"), ("cache", "decode")):
                speed = _training_images_per_second(model, loaders[source], args.steps, precision == "bf16",
                                                    device)
                rows.append({"backbone": spec["name"], "input_size": spec["image_size"], "precision": precision,
                             "input": source, "train_images_per_second": speed})
                print(f"{spec['name']:>24} {precision} {source:>6}: {speed:8.2f} img/s", flush=True)

    print(f"\nInput pipeline only (load + augment + collate, {image_size}px): "
          f"cache {input_speed['cache']:.1f} img/s, decode {input_speed['decode']:.1f} img/s; "
          f"building the cache of {len(paths)} images took {cache_seconds:.2f} s")
    print(f"\n{'backbone':>24} | {'fp32 cache':>10} | {'fp32 decode':>11} | {'bf16 cache':>10} | {'bf16 decode':>11}")
    for spec in backbones:
        speeds = {(row["precision"], row["input"]): row["train_images_per_second"]
                  for row in rows if row["backbone"] == spec["name"]}
        print(f"{spec['name']:>24} | {speeds['fp32', 'cache']:10.2f} | {speeds['fp32', 'decode']:11.2f} | "
              f"{speeds['bf16', 'cache']:10.2f} | {speeds['bf16', 'decode']:11.2f}")

    if args.output:
        report = {
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "images": len(paths), "source": args.data_dir or "generated JPEG", "processed_size": image_size,
            "batch_size": args.batch_size, "steps": args.steps, "workers": args.workers,
            "cache_build_seconds": cache_seconds, "input_images_per_second": input_speed, "training": rows,
        }
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
