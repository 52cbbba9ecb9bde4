"""Inference speed on 512x512 photos, measured side by side in one run (this machine is noisy: compare ratios).

Rows:
- naive: the checkpoint's timm backbones as plain classifiers at their native resolution, one after another,
  one image at a time (what a user gets by looping over four timm models);
- model: `MetaQAPModel` forward on processed tensors, at several batch sizes;
- pipeline: `pipeline("image-quality")` from JPEG files to scores (decode + processor + model), batched.
Each in float32 and bfloat16; then
- onnxruntime: the checkpoint exported with `metaqap_hf.export.export_onnx` (float32), run by onnxruntime's CPU
  provider on the same processed tensors at the same batch sizes (when the `onnx` extra is installed).

    python benchmarks/inference_speed.py --images 48 --output speed.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from transformers import pipeline

import metaqap_hf
from metaqap_hf import MetaQAPModel
from metaqap_hf.export import INPUT_NAME, export_onnx

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def make_photos(folder: Path, count: int) -> list[Path]:
    """Smooth random 512x512 JPEGs (content does not change the cost of these CNNs)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        low = rng.random((16, 16, 3))
        image = Image.fromarray((low * 255).astype(np.uint8)).resize((512, 512), Image.BICUBIC)
        paths.append(folder / f"photo{i:03d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def images_per_second(run, count: int, repeats: int) -> float:
    run()  # warm-up: oneDNN picks its kernels on the first call
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
        size = net.pretrained_cfg["input_size"][-1]
        classifiers.append((net, size))

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            for image in pixels:
                for net, size in classifiers:
                    net(torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear",
                                                        antialias=True))
    return run


def onnxruntime_rows(model_path: str, folder: Path, pixels: torch.Tensor, batch_sizes: list[int], threads: int,
                     repeats: int) -> list[dict]:
    """`model forward` rows for the exported model under onnxruntime; none when the onnx extra is missing."""
    try:
        import onnxruntime
        export = export_onnx(model_path, folder / "model.onnx")
    except ImportError as error:
        print(f"no onnxruntime rows: {error}")
        return []
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(export.path), options, providers=["CPUExecutionProvider"])
    array = pixels.numpy()
    rows = []
    for batch in batch_sizes:
        def run(batch=batch):
            for start in range(0, len(array), batch):
                session.run(None, {INPUT_NAME: array[start:start + batch]})
        rows.append({"row": f"onnxruntime {onnxruntime.__version__}: model forward", "dtype": "float32",
                     "batch": batch, "img_per_s": images_per_second(run, len(array), repeats)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(metaqap_hf.DEFAULT_MODEL_PATH))
    parser.add_argument("--images", type=int, default=32, help="photos per timed run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row; the fastest counts")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                        help="PyTorch precisions to time (bfloat16 is emulated, and slow, on CPUs without AVX512-BF16)")
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        paths = make_photos(Path(folder), args.images)
        processor = metaqap_hf.MetaQAPImageProcessor()
        pixels = processor(images=[metaqap_hf.load_image(p) for p in paths], return_tensors="pt")["pixel_values"]
        rows, naive_by_dtype = [], {}
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            model = MetaQAPModel.from_pretrained(args.model, dtype=dtype).eval()
            naive = naive_by_dtype[dtype_name] = images_per_second(naive_baseline(model, pixels, dtype), args.images,
                                                                   args.repeats)
            rows.append({"row": "naive: timm classifiers one after another", "dtype": dtype_name,
                         "batch": 1, "img_per_s": naive})
            for batch in args.batch_sizes:
                def run_model(batch=batch):
                    with torch.inference_mode():
                        for start in range(0, len(pixels), batch):
                            model(pixels[start:start + batch])
                rows.append({"row": "model forward", "dtype": dtype_name, "batch": batch,
                             "img_per_s": images_per_second(run_model, args.images, args.repeats)})
            scorer = pipeline("image-quality", model=args.model, dtype=dtype)
            batch = max(args.batch_sizes)
            rows.append({"row": "pipeline: JPEG files -> scores", "dtype": dtype_name, "batch": batch,
                         "img_per_s": images_per_second(lambda: scorer([str(p) for p in paths], batch_size=batch),
                                                        args.images, args.repeats)})
        rows += onnxruntime_rows(args.model, Path(folder), pixels, args.batch_sizes, args.threads, args.repeats)
        for row in rows:
            row["vs_naive_same_dtype"] = row["img_per_s"] / naive_by_dtype.get(row["dtype"], float("nan"))

    print(f"{args.images} photos of 512x512, {args.threads} threads, best of {args.repeats}")
    print(f"{'':<44} {'dtype':<9} {'batch':>5} {'img/s':>7} {'x naive':>8}")
    for row in rows:
        print(f"{row['row']:<44} {row['dtype']:<9} {row['batch']:>5} {row['img_per_s']:>7.2f} "
              f"{row['vs_naive_same_dtype']:>8.2f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"model": args.model, "images": args.images,
                                                 "threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
