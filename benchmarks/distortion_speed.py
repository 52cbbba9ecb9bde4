"""How fast the 25 synthetic distortions run: this checkout's against a previous commit's, side by side.

The previous implementation (default: commit 338716b, the last before the batched rewrite) is taken from git
history into a temporary package, so both run in the same process on the same crops of real photos. Old and new
alternate call by call, so a shared machine's changing load hits both alike; ratios compare medians.

- per type: distorted images/s, levels 1-5 in turn, in this process with the first of --threads threads;
- mixed: a random type and level per image (``random_distortion``, the same draws for old and new), in this
  process at each of --threads, and in a pool of --workers processes of one thread each, each distorting its
  slice of the batch into a shared output batch;
- on CUDA when present: per type and mixed, with --cuda-batch crops per call (random draws on the GPU too).

    python benchmarks/distortion_speed.py --output benchmarks/results/distortion_speed-2core-cpu.json
    python benchmarks/distortion_speed.py --quick      # a smoke run: small batches, one round
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from metaqap_hf import distortions as current
from metaqap_hf.image_utils import load_image_tensor
from metaqap_hf.pretraining import find_images

REPO = Path(__file__).resolve().parents[1]
BASELINE_PACKAGE = "baseline_distortions"


def load_baseline(commit: str, into: Path):
    """Import ``src/metaqap_hf/distortions`` as it was at ``commit`` (the package imports only itself)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src/metaqap_hf/distortions"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "metaqap_hf" / "distortions").rename(into / BASELINE_PACKAGE)
    sys.path.insert(0, str(into))
    return importlib.import_module(BASELINE_PACKAGE)


def photo_crops(image_dir: Path, count: int, size: int) -> torch.Tensor:
    """``count`` centre crops of the photos (of ``image_dir``, recursively) at least ``size`` px on each side, the
    photos repeated in turn when there are fewer than ``count``."""
    crops = []
    for path in find_images(image_dir):
        image = load_image_tensor(path)
        height, width = image.shape[-2:]
        if min(height, width) >= size:
            top, left = (height - size) // 2, (width - size) // 2
            crops.append(image[:, top : top + size, left : left + size])
        if len(crops) == count:
            break
    if not crops:
        raise ValueError(f"{image_dir} holds no photo of at least {size} px a side.")
    return torch.stack([crops[index % len(crops)] for index in range(count)])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(function, synchronize: bool = False) -> float:
    start = time.perf_counter()
    function()
    if synchronize:
        torch.cuda.synchronize()
    return time.perf_counter() - start


# Worker processes: each holds both implementations and shares the crops and the output batch with this process,
# so a slice is distorted in place and nothing but the task travels.
_worker_state: dict = {}


def _start_worker(baseline_dir: str, images: torch.Tensor, output: torch.Tensor) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, baseline_dir)
    _worker_state.update(modules={"previous": importlib.import_module(BASELINE_PACKAGE), "current": current},
                         images=images, output=output)


def _distort_slice(task: tuple[str, int, int, int]) -> None:
    name, start, stop, seed = task
    module = _worker_state["modules"][name]
    generator = torch.Generator().manual_seed(seed)
    _worker_state["output"][start:stop] = module.random_distortion(
        _worker_state["images"][start:stop], generator=generator
    )[0]


def per_type_rates(modules: dict, images: torch.Tensor, synchronize: bool = False) -> dict:
    """Images/s per type and implementation: one call per level, implementations alternating."""
    rates = {}
    for kind in current.DISTORTION_TYPES:
        seconds = {name: 0.0 for name in modules}
        for name, module in modules.items():  # warm-up: kernels, caches, lazy imports
            module.distort(images[:1], kind, 1, generator=torch.Generator(images.device).manual_seed(0))
        for level in range(1, current.NUM_LEVELS + 1):
            for name, module in modules.items():
                generator = torch.Generator(images.device).manual_seed(level)
                seconds[name] += timed(lambda: module.distort(images, kind, level, generator=generator), synchronize)
        rates[kind] = {name: current.NUM_LEVELS * images.shape[0] / spent for name, spent in seconds.items()}
        rates[kind]["ratio"] = rates[kind]["current"] / rates[kind]["previous"]
    return rates


def summarise(per_round: dict[str, list[float]]) -> dict:
    summary = {name: {"median": statistics.median(rates), "rounds": rates} for name, rates in per_round.items()}
    summary["ratio"] = summary["current"]["median"] / summary["previous"]["median"]
    return summary


def mixed_rates(modules: dict, images: torch.Tensor, rounds: int, synchronize: bool = False) -> dict:
    """Images/s of ``random_distortion`` over the batch, implementations alternating round by round."""
    for module in modules.values():
        module.random_distortion(images[:2], generator=torch.Generator(images.device).manual_seed(0))
    per_round = {name: [] for name in modules}
    for round_index in range(rounds):
        for name, module in modules.items():
            generator = torch.Generator(images.device).manual_seed(round_index)
            spent = timed(lambda: module.random_distortion(images, generator=generator), synchronize)
            per_round[name].append(images.shape[0] / spent)
    return summarise(per_round)


def pool_rates(pool, names: list[str], batch: int, workers: int, rounds: int) -> dict:
    """Like ``mixed_rates``, with the batch split over the pool's processes, each writing its slice in place."""
    bounds = [round(batch * index / workers) for index in range(workers + 1)]
    per_round = {name: [] for name in names}
    for round_index in range(-1, rounds):  # round -1 warms the workers up
        for name in names:
            tasks = [(name, start, stop, round_index + 1000 * part) for part, (start, stop)
                     in enumerate(itertools.pairwise(bounds))]
            spent = timed(lambda: pool.map(_distort_slice, tasks))
            if round_index >= 0:
                per_round[name].append(batch / spent)
    return summarise(per_round)


def print_per_type(title: str, rates: dict) -> None:
    print(f"\n{title}")
    print(f"{'distortion':30s} {'previous img/s':>15s} {'current img/s':>15s} {'speed-up':>9s}")
    for kind, rate in rates.items():
        print(f"{kind:30s} {rate['previous']:15.1f} {rate['current']:15.1f} {rate['ratio']:8.1f}x")


def print_mixed(title: str, summary: dict) -> None:
    print(f"{title:30s} {summary['previous']['median']:15.1f} {summary['current']['median']:15.1f} "
          f"{summary['ratio']:8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=os.environ.get("METAQAP_PRISTINE_DIR"),
                        help="folder of real photos (default: $METAQAP_PRISTINE_DIR)")
    parser.add_argument("--size", type=int, default=384, help="crop side in pixels")
    parser.add_argument("--type-batch", type=int, default=4, help="crops per call when timing each type")
    parser.add_argument("--batch", type=int, default=32, help="crops per call when timing mixed types")
    parser.add_argument("--rounds", type=int, default=5, help="timed mixed calls per implementation")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count()],
                        help="torch threads of this process: per type at the first, mixed at each")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes of the worker pool (0: none)")
    parser.add_argument("--cuda-batch", type=int, default=256, help="crops per call on CUDA")
    parser.add_argument("--baseline", default="338716b", help="git commit of the previous implementation")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 crops per type, 8 mixed, one round")
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    if args.images is None or not Path(args.images).is_dir():
        parser.error("give a folder of photos with --images (or set METAQAP_PRISTINE_DIR)")
    if args.quick:
        args.type_batch, args.batch, args.rounds, args.cuda_batch = 2, 8, 1, 16
    torch.set_num_threads(args.threads[0])

    with tempfile.TemporaryDirectory(prefix="metaqap-baseline-") as baseline_dir:
        modules = {"previous": load_baseline(args.baseline, Path(baseline_dir)), "current": current}
        photos = photo_crops(Path(args.images), max(args.batch, args.type_batch), args.size)
        results = {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "baseline_commit": args.baseline,
            "size": args.size,
            "photos": str(args.images),
            "threads": args.threads,
            "type_batch": args.type_batch,
            "batch": args.batch,
            "rounds": args.rounds,
            "workers": args.workers,
        }
        print(f"{results['cpu']} ({results['cpu_count']} CPUs), torch {torch.__version__}, crops {args.size} px, "
              f"previous = {args.baseline}")
        results["cpu_per_type"] = per_type_rates(modules, photos[: args.type_batch])
        print_per_type(f"CPU, {args.threads[0]} thread(s), {args.type_batch} crops per call", results["cpu_per_type"])
        print(f"\nmixed types and levels, {args.batch} crops per call, median of {args.rounds} rounds")
        print(f"{'':30s} {'previous img/s':>15s} {'current img/s':>15s} {'speed-up':>9s}")
        results["cpu_mixed"] = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            results["cpu_mixed"][f"{threads}_threads"] = mixed_rates(modules, photos[: args.batch], args.rounds)
            print_mixed(f"CPU, 1 process x {threads} thread(s)", results["cpu_mixed"][f"{threads}_threads"])
        torch.set_num_threads(args.threads[0])
        if args.workers:
            context = mp.get_context("spawn")
            shared = photos[: args.batch].clone().share_memory_()
            initargs = (baseline_dir, shared, torch.empty_like(shared).share_memory_())
            with context.Pool(args.workers, _start_worker, initargs) as pool:
                results["cpu_workers_mixed"] = pool_rates(pool, list(modules), args.batch, args.workers, args.rounds)
            print_mixed(f"CPU, {args.workers} processes x 1 thread", results["cpu_workers_mixed"])
            # The previous implementation ran in one process at torch's default thread count (one per CPU).
            as_it_ran = results["cpu_mixed"].get(f"{os.cpu_count()}_threads")
            if as_it_ran is not None:
                results["workers_vs_previous_as_it_ran"] = (
                    results["cpu_workers_mixed"]["current"]["median"] / as_it_ran["previous"]["median"]
                )
                print(f"current in {args.workers} processes x 1 thread against previous in 1 process x "
                      f"{os.cpu_count()} threads (as it ran): {results['workers_vs_previous_as_it_ran']:.1f}x")
        if torch.cuda.is_available():
            results["cuda_device"] = torch.cuda.get_device_name()
            gpu_photos = photo_crops(Path(args.images), args.cuda_batch, args.size).cuda()
            results["cuda_per_type"] = per_type_rates(modules, gpu_photos, synchronize=True)
            print_per_type(f"CUDA ({results['cuda_device']}), {args.cuda_batch} crops per call",
                           results["cuda_per_type"])
            results["cuda_mixed"] = mixed_rates(modules, gpu_photos, args.rounds, synchronize=True)
            print_mixed("CUDA mixed", results["cuda_mixed"])
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
