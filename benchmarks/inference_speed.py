"""Inference speed on 512x512 JPEGs, every backend side by side in one run on the same images (machines are noisy:
compare the ratios within a run). The header names the CPU and what it computes natively.

Rows:
- naive: the checkpoint's timm backbones as plain classifiers at their native resolution, one after another, one
  image at a time (what a user gets by looping over four timm models);
- model forward: on processed tensors at each batch size, by PyTorch float32, PyTorch bfloat16 (only where the CPU
  computes bfloat16 natively, or with `--force-bfloat16`) and ONNX Runtime (the library's `OnnxRuntimeModel` on the
  cached, parity-checked export; when the `onnx` extra is installed);
- score_to_output: the library behind `metaqap score` in this process, from building the `ImageScorer` (model
  loading; for ONNX Runtime the cache look-up and the session) to the last row written, for each backend;
- metaqap score: the command end to end (interpreter start-up and imports too) in a fresh process for each backend,
  best of `--cli-repeats`, with the largest score difference from PyTorch float32.
The ONNX export is made (and timed) first, so the last two are what every run after the first costs.

    python benchmarks/inference_speed.py --images-dir ../shared/data/biq2021-sample/Images --images 64 \\
        --output benchmarks/results/inference_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

import metaqap_hf
from metaqap_hf import MetaQAPModel
from metaqap_hf.devices import cpu_has_native_bfloat16
from metaqap_hf.onnx_runtime import OnnxRuntimeModel, allowed_cores, onnxruntime_available

SOURCE = Path(__file__).resolve().parents[1] / "src"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
IMAGE_SUFFIXES = (".jpg", ".jpeg")


def cpu_header() -> dict:
    """What a figure depends on: the CPU's name, its instruction sets for torch, native bfloat16, the cores."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": name, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bfloat16": cpu_has_native_bfloat16(), "allowed_cores": allowed_cores(),
            "torch": torch.__version__}


def photos(folder: Path, count: int, images_dir: str | None) -> list[Path]:
    """`count` JPEGs: the first of `images_dir` (sorted), or smooth random 512x512 ones written into `folder`."""
    if images_dir:
        found = sorted(path for path in Path(images_dir).iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        if len(found) < count:
            raise SystemExit(f"{images_dir} has {len(found)} JPEGs, fewer than --images {count}")
        chosen = found[:count]
    else:
        rng = np.random.default_rng(0)
        chosen = []
        for index in range(count):
            low = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
            chosen.append(folder / f"photo{index:03d}.jpg")
            Image.fromarray(low).resize((512, 512), Image.BICUBIC).save(chosen[-1], quality=90)
    linked = folder / "images"  # one folder of exactly these files, for the command line
    linked.mkdir()
    for path in chosen:
        (linked / path.name).symlink_to(path.resolve())
    return sorted(linked.iterdir())


def images_per_second(run, count: int, repeats: int) -> float:
    run()  # warm-up: oneDNN and onnxruntime pick their kernels on the first call
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return count / best


def naive_baseline(model: MetaQAPModel, pixels: torch.Tensor, dtype: torch.dtype):
    classifiers = []
    for spec in model.config.backbones:
        net = timm.create_model(spec["name"], pretrained=False).eval()
        classifiers.append((net, net.pretrained_cfg["input_size"][-1]))

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            for image in pixels:
                for net, size in classifiers:
                    net(torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear",
                                                        antialias=True))
    return run


def forward_rows(label: str, dtype_name: str, model, pixels: torch.Tensor, batch_sizes: list[int],
                 repeats: int) -> list[dict]:
    rows = []
    for batch in batch_sizes:
        def run(batch=batch):
            with torch.inference_mode():
                for start in range(0, len(pixels), batch):
                    model(pixel_values=pixels[start:start + batch])
        rows.append({"row": f"{label}: model forward", "dtype": dtype_name, "batch": batch,
                     "img_per_s": images_per_second(run, len(pixels), repeats)})
    return rows


def command_environment(threads: int, hf_home: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SOURCE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "HF_HUB_OFFLINE": "1", "HF_HOME": hf_home, "OMP_NUM_THREADS": str(threads)}


def run_command(folder: Path, model: str, runtime: str, dtype: str, batch: int, output: Path, env: dict) -> float:
    """Seconds of `metaqap score FOLDER -o OUTPUT` in a fresh process, start-up included."""
    command = [sys.executable, "-c", "import sys; from metaqap_cli import main; sys.exit(main())", "score",
               str(folder), "--model", model, "--device", "cpu", "--runtime", runtime, "--dtype", dtype,
               "--batch-size", str(batch), "-o", str(output)]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def library_seconds(folder: Path, model: str, runtime: str, dtype: str, batch: int, output: Path) -> float:
    from metaqap_hf.scoring import score_to_output

    started = time.perf_counter()
    score_to_output([folder], output, model=model, device="cpu", runtime=runtime, dtype=dtype, batch_size=batch)
    return time.perf_counter() - started


def read_scores(path: Path) -> dict[str, float]:
    rows = (json.loads(line) for line in path.read_text().splitlines())
    return {row["path"]: row["raw_score"] for row in rows if "raw_score" in row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(metaqap_hf.DEFAULT_MODEL_PATH))
    parser.add_argument("--images", type=int, default=64, help="photos per timed run")
    parser.add_argument("--images-dir", help="take the photos from this folder of JPEGs (e.g. BIQ2021's Images/) "
                                             "instead of generating 512x512 ones")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per model row; the fastest counts")
    parser.add_argument("--cli-repeats", type=int, default=2, help="runs of each command; the fastest counts")
    parser.add_argument("--threads", type=int, default=allowed_cores(),
                        help="threads of PyTorch and of onnxruntime, the same for both")
    parser.add_argument("--force-bfloat16", action="store_true",
                        help="also time PyTorch bfloat16 where the CPU emulates it (25-40x slower there)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive timm baseline")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end command rows")
    parser.add_argument("--note", default="", help="a line for the header, e.g. who else used the machine")
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = {**cpu_header(), "threads": args.threads, "images": args.images,
              "images_from": args.images_dir or "generated 512x512 JPEGs", "note": args.note}
    dtype_names = ["float32"] + (["bfloat16"] if header["native_bfloat16"] or args.force_bfloat16 else [])
    rows, cli = [], {}

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        paths = photos(scratch, args.images, args.images_dir)
        processor = metaqap_hf.MetaQAPImageProcessor.from_pretrained(args.model)
        pixels = processor(images=[metaqap_hf.load_image(p) for p in paths], return_tensors="pt")["pixel_values"]
        for dtype_name in dtype_names:
            model = MetaQAPModel.from_pretrained(args.model, dtype=DTYPES[dtype_name]).eval()
            if not args.no_naive:
                rows.append({"row": "naive: timm classifiers one after another", "dtype": dtype_name, "batch": 1,
                             "img_per_s": images_per_second(naive_baseline(model, pixels[:8], DTYPES[dtype_name]),
                                                            8, args.repeats)})
            rows += forward_rows("PyTorch", dtype_name, model, pixels, args.batch_sizes, args.repeats)
        runtimes = [("torch", name) for name in dtype_names]
        hf_home = str(scratch / "hf_home")  # a fresh cache: the export below is timed from nothing
        if onnxruntime_available():
            import onnxruntime

            started = time.perf_counter()
            os.environ["HF_HOME"] = hf_home
            onnx_model = OnnxRuntimeModel.from_model(MetaQAPModel.from_pretrained(args.model).eval(), processor,
                                                     threads=args.threads)
            header["onnx_export_s"] = time.perf_counter() - started
            header["onnxruntime"] = onnxruntime.__version__
            rows += forward_rows("ONNX Runtime", "float32", onnx_model, pixels, args.batch_sizes, args.repeats)
            runtimes.append(("onnx", "float32"))
        else:
            print(f"no ONNX Runtime rows: the onnx extra is not installed")
        if not args.no_cli:
            env = command_environment(args.threads, hf_home)
            batch = max(args.batch_sizes)
            seconds = {key: float("inf") for key in runtimes}
            for _ in range(args.cli_repeats):  # interleaved: a slow spell of the machine hits every backend
                for runtime, dtype_name in runtimes:
                    output = scratch / f"{runtime}-{dtype_name}.jsonl"
                    output.unlink(missing_ok=True)
                    seconds[runtime, dtype_name] = min(seconds[runtime, dtype_name], run_command(
                        paths[0].parent, args.model, runtime, dtype_name, batch, output, env))
            reference = read_scores(scratch / "torch-float32.jsonl")
            for runtime, dtype_name in runtimes:
                wall = min(library_seconds(paths[0].parent, args.model, runtime, dtype_name, batch,
                                           scratch / f"library-{runtime}-{dtype_name}-{repeat}.jsonl")
                           for repeat in range(args.cli_repeats))
                rows.append({"row": f"score_to_output, runtime {runtime}: files -> JSONL", "dtype": dtype_name,
                             "batch": batch, "img_per_s": len(paths) / wall, "wall_s": wall})
            for (runtime, dtype_name), wall in seconds.items():
                scores = read_scores(scratch / f"{runtime}-{dtype_name}.jsonl")
                assert scores.keys() == reference.keys(), "every backend scores every photo"
                difference = max(abs(scores[key] - reference[key]) for key in reference)
                cli[f"{runtime} {dtype_name}"] = {"wall_s": wall, "files_per_s": len(scores) / wall,
                                                  "max_abs_diff_vs_torch_float32": difference}
                rows.append({"row": f"metaqap score --runtime {runtime}: files -> JSONL", "dtype": dtype_name,
                             "batch": batch, "img_per_s": len(scores) / wall, "wall_s": wall,
                             "max_abs_diff": difference})

    print(f"CPU: {header['cpu']}; torch capability {header['torch_cpu_capability']}; native bfloat16: "
          f"{'yes' if header['native_bfloat16'] else 'no (emulated)'}; {header['allowed_cores']} cores allowed, "
          f"{args.threads} threads; torch {header['torch']}"
          + (f", onnxruntime {header['onnxruntime']}" if "onnxruntime" in header else ""))
    print(f"{args.images} photos ({header['images_from']}), best of {args.repeats} (commands: of {args.cli_repeats})"
          + (f"; {header['note']}" if header["note"] else ""))
    if "onnx_export_s" in header:
        print(f"ONNX export of the model, checked against PyTorch (once; cached after): {header['onnx_export_s']:.1f} s")
    print(f"{'':<52} {'dtype':<9} {'batch':>5} {'img/s':>7} {'wall s':>7} {'max |diff|':>10}")
    for row in rows:
        wall = f"{row['wall_s']:>7.1f}" if "wall_s" in row else f"{'':>7}"
        diff = f"{row['max_abs_diff']:>10.1e}" if "max_abs_diff" in row else f"{'':>10}"
        print(f"{row['row']:<52} {row['dtype']:<9} {row['batch']:>5} {row['img_per_s']:>7.2f} {wall} {diff}")
    if "torch float32" in cli and "onnx float32" in cli:
        ratio = cli["torch float32"]["wall_s"] / cli["onnx float32"]["wall_s"]
        print(f"metaqap score end to end, ONNX Runtime against PyTorch float32: {ratio:.2f}x as fast; largest score "
              f"difference {cli['onnx float32']['max_abs_diff_vs_torch_float32']:.1e}")
        header["cli_onnx_vs_torch_float32"] = ratio
    if args.output:
        Path(args.output).write_text(json.dumps({"model": args.model, "machine": header, "rows": rows,
                                                 "command": cli}, indent=2) + "\n")


if __name__ == "__main__":
    main()
