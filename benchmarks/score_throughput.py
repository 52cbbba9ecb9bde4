"""Scoring throughput and memory, end to end: image files on disk -> rows in a results file.

Parts (`--parts`):
- workers:   files/s of `score_to_output` with 0, 1 and 2 decoding processes (the default model, float32,
             512x512 JPEGs), steady state (first row to last);
- processes: wall time of `metaqap score` in 1 process and in 2 (`accelerate launch --multi_gpu --num_processes 2`,
             the documented CPU form), start-up included;
- rss:       peak RSS after 1,000 and after 10,000 small JPEGs in one run (timm's tiny test model: the model is
             not what could grow);
- large:     peak RSS growth while scoring 1 and 16 100-megapixel photos (PNG: one full decode at a time; JPEG:
             decoded at a reduced size), batch size 8;
- device:    the batched path for one accelerator, 512x512 JPEGs (plus `--device-other` PNGs) on `--device`:
             JPEGs read as bytes and decoded in batches by `torchvision.io.decode_jpeg(list, device=...)` (nvJPEG on
             a GPU; libjpeg-turbo on the CPU, where the same code runs), other formats decoded and resized by
             `--device-workers` processes (the library's `prepare_pixels`) into pinned memory, the processor's
             resize on the device, the model in `--dtype` (auto: bfloat16 on GPUs) with channels-last inputs and
             `--device-batch-size` images a forward, each batch's results read while the next is decoded. Prints
             files/s end to end (files on disk -> scores; steady: after the first batch), the model-only ceiling
             (forward on ready pixels), the library's `score_to_output` on the same files and device, and the
             largest score difference from the library's scores (decoders differ slightly: nvJPEG vs libjpeg).
Each measurement runs in a fresh process, so one part's peak memory never shows in another's. By default every part
but `device` runs; `--device D` alone runs the device part on D.

    python benchmarks/score_throughput.py --output score_throughput.json
    python benchmarks/score_throughput.py --device cuda --output score_throughput-gpu.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PARTS = ("workers", "processes", "rss", "large", "device")
SOURCE = Path(__file__).resolve().parents[1] / "src"


def write_jpegs(folder: Path, count: int, size: int, distinct: int = 32) -> Path:
    """`count` JPEGs of smooth random content, `distinct` different ones written over and over (fast for 10k)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(distinct):
        low = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(low).resize((size, size), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    for index in range(count):
        (folder / f"{index:06d}.jpg").write_bytes(encoded[index % distinct])
    return folder


def write_large(folder: Path, count: int, kind: str, side: int = 10_000) -> Path:
    """`count` links to one photo of side x side pixels (100 MP by default) as PNG or JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack([np.broadcast_to(ramp[None, :], (side, side)), np.broadcast_to(ramp[:, None], (side, side)),
                       np.full((side, side), 90, np.float32)], axis=-1).astype(np.uint8)
    first = folder / f"large0.{kind}"
    Image.fromarray(pixels).save(first, **({"compress_level": 1} if kind == "png" else {"quality": 90}))
    for index in range(1, count):
        os.link(first, folder / f"large{index}.{kind}")
    return folder


def tiny_checkpoint(folder: Path) -> Path:
    from metaqap_hf import MetaQAPImageProcessor
    from metaqap_hf.factory import create_model

    create_model("tiny", pretrained=False).save_pretrained(folder)
    MetaQAPImageProcessor().save_pretrained(folder)
    return folder


def _status_mb(field: str) -> float:
    """A memory figure of /proc/self/status in MB (ru_maxrss would carry the parent's peak over exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def reset_peak_rss() -> float:
    """Start the peak afresh from the current resident memory, which is returned."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_mb("VmRSS")


# --------------------------------------------------------------------------- measurements (each in its process)
def measure_rate(folder: str, model: str | None, workers: int, batch_size: int, device: str, dtype: str) -> dict:
    from metaqap_hf.scoring import ImageInputs, score_to_output

    times = []
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        run = score_to_output(ImageInputs([folder]), Path(scratch) / "out.jsonl", model=model, device=device,
                              dtype=dtype, batch_size=batch_size, num_workers=workers,
                              on_result=lambda item: times.append(time.perf_counter()))
        wall = time.perf_counter() - started
    steady = (len(times) - batch_size) / (times[-1] - times[batch_size - 1]) if len(times) > 2 * batch_size else None
    return {"files": run.scored, "workers": workers, "batch_size": batch_size, "device": device, "dtype": dtype,
            "files_per_s": steady, "wall_s": wall}


def measure_rss(folder: str, model: str, checkpoints: list[int]) -> dict:
    from metaqap_hf.scoring import ImageInputs, score_to_output

    seen, peaks = [0], {}

    def sample(item) -> None:
        seen[0] += 1
        if seen[0] in checkpoints:
            peaks[seen[0]] = peak_rss_mb()

    with tempfile.TemporaryDirectory() as scratch:
        score_to_output(ImageInputs([folder]), Path(scratch) / "out.jsonl", model=model, device="cpu",
                        batch_size=16, on_result=sample)
    return {"peak_rss_mb_after": peaks}


def measure_large(folder: str, model: str, batch_size: int) -> dict:
    from metaqap_hf.scoring import ImageScorer

    scorer = ImageScorer(model, device="cpu")
    before = reset_peak_rss()
    results = list(scorer.score_files([folder], batch_size=batch_size))
    return {"files": sum(item.ok for item in results), "rss_before_mb": before,
            "peak_growth_mb": peak_rss_mb() - before}


def measure_device(folder: str, model: str | None, device: str, dtype: str, batch_size: int, workers: int,
                   model_batches: int) -> dict:
    """The batched path of the `device` part (module docstring)."""
    from concurrent.futures import ProcessPoolExecutor

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from metaqap_hf.devices import resolve_device
    from metaqap_hf.image_utils import rescale_pixels
    from metaqap_hf.pipeline_image_quality import quality_results
    from metaqap_hf.scoring import ImageInput, ImageScorer, score_to_output
    from metaqap_hf.scoring.scorer import _prepare_in_worker, _start_worker

    torch_device = resolve_device(device)
    scorer = ImageScorer(model, device=device, dtype=dtype, runtime="torch")  # the library's model and processor
    net, processor, config = scorer.model, scorer.processor, scorer.config
    files = sorted(str(path) for path in Path(folder).iterdir())
    is_jpeg = [path.lower().endswith((".jpg", ".jpeg")) for path in files]
    on_gpu = torch_device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    def synchronize():
        if on_gpu:
            torch.cuda.synchronize(torch_device)

    def to_model_input(uint8_pixels: torch.Tensor) -> torch.Tensor:
        return rescale_pixels(uint8_pixels, processor).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def score_all() -> tuple[dict[str, float], list[float]]:
        scores, batch_done = {}, []
        others = [path for path, jpeg in zip(files, is_jpeg) if not jpeg]
        with ProcessPoolExecutor(workers, initializer=_start_worker,
                                 initargs=(processor, scorer.input_size)) as pool:
            decoded_others = pool.map(_prepare_in_worker, [ImageInput(path, path) for path in others],
                                      chunksize=8)  # in order, working ahead
            other_pixels = iter(decoded_others)
            pending = None  # the previous batch: (paths, outputs), read once the next one is queued
            for start in range(0, len(files), batch_size):
                paths = files[start:start + batch_size]
                flags = is_jpeg[start:start + batch_size]
                jpegs = [path for path, jpeg in zip(paths, flags) if jpeg]
                ready = []
                if jpegs:
                    decoded = decode_jpeg([read_file(path) for path in jpegs], mode=ImageReadMode.RGB,
                                          device=torch_device, apply_exif_orientation=True)
                    # `resize_pixels`' processor call, on the whole batch and on its device
                    ready += processor(images=decoded, do_rescale=False, do_normalize=False,
                                       return_tensors="pt")["pixel_values"]
                rest = [path for path, jpeg in zip(paths, flags) if not jpeg]
                if rest:
                    decoded_rest = []
                    for path in rest:
                        pixels, reason = next(other_pixels)
                        if pixels is None:
                            raise RuntimeError(f"{path}: {reason}")
                        decoded_rest.append(pixels)
                    stacked = torch.stack(decoded_rest)
                    ready += (stacked.pin_memory() if on_gpu else stacked).to(torch_device, non_blocking=True)
                ordered = jpegs + rest
                outputs = net(pixel_values=to_model_input(torch.stack(ready)))
                if pending is not None:
                    scores.update(zip(pending[0], (row["raw_score"] for row in quality_results(pending[1], config))))
                    batch_done.append(time.perf_counter())
                pending = (ordered, outputs)
            scores.update(zip(pending[0], (row["raw_score"] for row in quality_results(pending[1], config))))
            batch_done.append(time.perf_counter())
        return scores, batch_done

    score_all()  # warm-up: cuDNN and oneDNN choose kernels, nvJPEG allocates
    started = time.perf_counter()
    scores, batch_done = score_all()
    wall = time.perf_counter() - started
    steady = ((len(files) - batch_size) / (batch_done[-1] - batch_done[0]) if len(batch_done) > 1 else None)

    height, width = scorer.input_size
    ready = torch.rand(batch_size, 3, height, width, device=torch_device)
    with torch.inference_mode():
        net(pixel_values=to_model_input(ready))
        synchronize()
        model_started = time.perf_counter()
        for _ in range(model_batches):
            net(pixel_values=to_model_input(ready))
        synchronize()
    ceiling = model_batches * batch_size / (time.perf_counter() - model_started)

    library_scores = {}
    with tempfile.TemporaryDirectory() as scratch:
        library_started = time.perf_counter()
        score_to_output([folder], Path(scratch) / "out.jsonl", model=model, device=device, dtype=dtype,
                        runtime="torch", batch_size=min(batch_size, 1024), num_workers=workers,
                        on_result=lambda item: library_scores.__setitem__(item.path, item.raw_score))
        library_wall = time.perf_counter() - library_started
    difference = max(abs(scores[path] - library_scores[path]) for path in files)
    return {"device": str(torch_device), "gpu": torch.cuda.get_device_name(torch_device) if on_gpu else None,
            "dtype": str(scorer.dtype).replace("torch.", ""), "files": len(files), "jpeg_files": sum(is_jpeg),
            "batch_size": batch_size, "workers": workers, "files_per_s": len(files) / wall,
            "steady_files_per_s": steady, "model_only_img_per_s": ceiling,
            "library_files_per_s": len(files) / library_wall, "max_abs_diff_vs_library": difference}


MEASUREMENTS = {"rate": measure_rate, "rss": measure_rss, "large": measure_large, "device": measure_device}


def in_fresh_process(name: str, **arguments) -> dict:
    command = [sys.executable, __file__, "--measure", name, "--arguments", json.dumps(arguments)]
    result = subprocess.run(command, capture_output=True, text=True, env=_environment())
    if result.returncode:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def _environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SOURCE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "HF_HUB_OFFLINE": "1", **extra}


# ------------------------------------------------------------------------------------------------------- parts
def part_workers(scratch: Path, args) -> list[dict]:
    folder = write_jpegs(scratch / "workers", args.images, 512)
    return [in_fresh_process("rate", folder=str(folder), model=args.model, workers=workers, batch_size=8,
                             device="cpu", dtype=args.dtype) for workers in (0, 1, 2)]


def part_processes(scratch: Path, args) -> list[dict]:
    folder = write_jpegs(scratch / "processes", args.images, 512)
    model = ["--model", args.model] if args.model else []
    score = ["-m", "metaqap_hf", "score", str(folder), *model, "--dtype", args.dtype, "--device", "cpu"]
    forms = {1: [sys.executable, *score],
             2: [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *score]}
    rows = []
    for processes, command in forms.items():
        output = scratch / f"processes{processes}.jsonl"
        started = time.perf_counter()
        result = subprocess.run([*command, "-o", str(output)], capture_output=True, text=True, env=_environment())
        wall = time.perf_counter() - started
        if result.returncode:
            raise RuntimeError(result.stderr[-3000:])
        rows.append({"processes": processes, "files": args.images, "wall_s": wall, "files_per_s": args.images / wall,
                     "last_line": result.stderr.strip().splitlines()[-1]})
    return rows


def part_rss(scratch: Path, args) -> list[dict]:
    folder = write_jpegs(scratch / "rss", args.rss_files, 64)
    model = tiny_checkpoint(scratch / "tiny")
    checkpoints = sorted({1000, args.rss_files})
    result = in_fresh_process("rss", folder=str(folder), model=str(model), checkpoints=checkpoints)
    peaks = {int(key): value for key, value in result["peak_rss_mb_after"].items()}
    return [{"files": files, "peak_rss_mb": peaks[files]} for files in checkpoints]


def part_large(scratch: Path, args) -> list[dict]:
    model = tiny_checkpoint(scratch / "tiny-large")
    rows = []
    for kind in ("png", "jpg"):
        for count in (1, 16):
            folder = write_large(scratch / f"large-{kind}-{count}", count, kind, args.large_side)
            result = in_fresh_process("large", folder=str(folder), model=str(model), batch_size=8)
            rows.append({"format": kind, "photos": count, "megapixels": args.large_side ** 2 / 1e6, **result})
    return rows


def part_device(scratch: Path, args) -> list[dict]:
    folder = write_jpegs(scratch / "device", args.device_images, 512)
    for index in range(args.device_other):  # other formats go through the decoding processes
        Image.open(folder / f"{index:06d}.jpg").save(folder / f"{index:06d}.png")
        (folder / f"{index:06d}.jpg").unlink()
    model = str(tiny_checkpoint(scratch / "tiny-device")) if args.model == "tiny" else args.model
    return [in_fresh_process("device", folder=str(folder), model=model, device=args.device or "auto",
                             dtype=args.dtype, batch_size=args.device_batch_size, workers=args.device_workers,
                             model_batches=args.model_batches)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS,
                        help="(default: all but device; with --device, device alone)")
    parser.add_argument("--model", help="checkpoint for the throughput parts (default: the bundled model; tiny: "
                                        "timm's tiny test model, for the device part's CI run)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--device", help="the device part's device: cuda, cuda:1, cpu (default: auto)")
    parser.add_argument("--images", type=int, default=64, help="512x512 JPEGs for the workers and processes parts")
    parser.add_argument("--rss-files", type=int, default=10_000)
    parser.add_argument("--large-side", type=int, default=10_000, help="side of the large photos, in pixels")
    parser.add_argument("--device-images", type=int, default=8192, help="files of the device part")
    parser.add_argument("--device-other", type=int, default=0, help="how many of them are PNGs, not JPEGs")
    parser.add_argument("--device-workers", type=int, default=min(16, os.cpu_count() or 1),
                        help="decoding processes of the device part (non-JPEG files; the library's run)")
    parser.add_argument("--device-batch-size", type=int, default=256)
    parser.add_argument("--model-batches", type=int, default=20, help="batches timed for the model-only ceiling")
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument("--measure", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASUREMENTS[args.measure](**json.loads(args.arguments))))
        return

    import torch

    parts = args.parts or (["device"] if args.device else [part for part in PARTS if part != "device"])
    report = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    with tempfile.TemporaryDirectory() as scratch:
        for part in parts:
            started = time.perf_counter()
            report[part] = globals()[f"part_{part}"](Path(scratch), args)
            print(f"\n{part} ({time.perf_counter() - started:.0f} s)")
            for row in report[part]:
                print("  " + ", ".join(f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}"
                                       for key, value in row.items()))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
