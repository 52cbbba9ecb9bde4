"""How fast synthetic pretraining data can be made on the CPU, against the cost of training on it.

Measures, for a batch of crops: each distortion type (images/s), the pseudo-MOS labelling (full-reference
scores), the overall random-type pipeline (distort + label), and one training step (forward + backward
+ SGD update) of timm ``tf_efficientnet_lite0`` (random init) on the same batch. Prints a table and
writes JSON.

    python benchmarks/distortion_speed.py --output distortion_speed.json
    python benchmarks/distortion_speed.py --quick   # one timed repeat, a few seconds per type
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

import timm
import torch
from skimage import data

from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS, distort, random_distortion
from metaqap_hf.image_utils import load_image_tensor
from metaqap_hf.pretraining import DEFAULT_METRICS, find_images, full_reference_scores


def _crops(image_dir: Path | None, batch_size: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random crops of pristine photos (the folder if given, else scikit-image's bundled photos)."""
    if image_dir is not None:
        images = [load_image_tensor(path) for path in find_images(image_dir)[:batch_size]]
    else:
        images = [torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0
                  for photo in (data.astronaut(), data.coffee(), data.rocket(), data.chelsea())]
    crops = []
    for index in range(batch_size):
        image = images[index % len(images)]
        if min(image.shape[-2:]) < size:
            raise ValueError(f"Benchmark images must be at least {size}px on each side.")
        top = int(torch.randint(image.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[2] - size + 1, (1,), generator=generator))
        crops.append(image[:, top : top + size, left : left + size])
    return torch.stack(crops)


def _seconds_per_call(function, repeats: int) -> float:
    function()  # warm-up: kernels, caches, lazy imports
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (levels cycle 1-5)")
    parser.add_argument("--quick", action="store_true", help="a single timed repeat per measurement")
    parser.add_argument("--images", type=Path, default=os.environ.get("METAQAP_PRISTINE_DIR"),
                        help="folder of pristine photos (default: $METAQAP_PRISTINE_DIR, else scikit-image photos)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = _crops(args.images if args.images and Path(args.images).is_dir() else None,
                    args.batch_size, args.size, generator)
    batch = images.shape[0]

    per_type = {}
    for kind in DISTORTION_TYPES:
        levels = itertools.cycle(range(1, NUM_LEVELS + 1))
        seconds = _seconds_per_call(lambda: distort(images, kind, next(levels), generator=generator), repeats)
        per_type[kind] = batch / seconds
    distorted = distort(images, "jpeg", 3)
    label_seconds = _seconds_per_call(lambda: full_reference_scores(images, distorted, args.metrics), repeats)

    def pipeline() -> None:
        mixed, _, _ = random_distortion(images, generator=generator)
        full_reference_scores(images, mixed, args.metrics)

    pipeline_seconds = _seconds_per_call(pipeline, max(repeats, 3))

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    targets = torch.rand(batch, 1)

    def train_step() -> None:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model((images - 0.5) / 0.5), targets)
        loss.backward()
        optimizer.step()

    model.train()
    train_seconds = _seconds_per_call(train_step, repeats)

    results = {
        "batch_size": batch,
        "size": args.size,
        "threads": args.threads,
        "repeats": repeats,
        "metrics": args.metrics,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "distort_images_per_second": per_type,
        "label_images_per_second": batch / label_seconds,
        "pipeline_images_per_second": batch / pipeline_seconds,
        "train_step_images_per_second": batch / train_seconds,
        "pipeline_time_per_train_time": pipeline_seconds / train_seconds,
    }
    print(f"batch {batch} x {args.size}px, {args.threads} thread(s), {repeats} repeat(s)")
    # "+ label" adds the measured labelling time per image to each type's distortion time.
    print(f"{'distortion':30s} {'distort img/s':>14s} {'+ label img/s':>14s}")
    for kind, rate in per_type.items():
        combined = 1.0 / (1.0 / rate + label_seconds / batch)
        print(f"{kind:30s} {rate:14.1f} {combined:14.1f}")
    print(f"{'labelling only (' + ','.join(args.metrics) + ')':30s} {results['label_images_per_second']:14.1f}")
    print(f"{'random type + label (overall)':30s} {results['pipeline_images_per_second']:14.1f}")
    print(f"{'tf_efficientnet_lite0 train step':30s} {results['train_step_images_per_second']:14.1f}")
    print(f"data cost per training cost: {results['pipeline_time_per_train_time']:.2f}x")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
