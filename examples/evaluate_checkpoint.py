"""Evaluate a MetaQAP checkpoint on one split of a benchmark: every IQA metric (raw and logistic-fitted, see
`metaqap_hf.metrics.compute_iqa_metrics`) to metrics.json, per-image predictions to predictions.csv, and a
predicted-versus-MOS scatter plot to scatter.png.

    python examples/evaluate_checkpoint.py --checkpoint runs/acc-lite/best --dataset biq2021 \
        --data-dir /data/BIQ2021 --split test --output-dir runs/acc-lite/eval-test

Images go through the same path as at inference: `load_image` + the checkpoint's image processor, no augmentation.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from metaqap_hf import MetaQAPImageProcessor, MetaQAPModel
from metaqap_hf.data import get_benchmark
from metaqap_hf.metrics import compute_iqa_metrics, srocc
from metaqap_hf.training import QualityDataCollator, predict, quality_dataset


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="folder written by save_pretrained (model + processor)")
    parser.add_argument("--dataset", default="biq2021", help="registered benchmark name (metaqap_hf.data.DATASETS)")
    parser.add_argument("--data-dir", required=True, help="the benchmark's folder in its official layout")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU and GPU)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only (CI)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    benchmark = get_benchmark(args.dataset)
    split = benchmark.load(args.data_dir)[args.split]
    if args.limit is not None:
        split = split.select(range(min(args.limit, len(split))))
    model = MetaQAPModel.from_pretrained(args.checkpoint).eval()
    processor = MetaQAPImageProcessor.from_pretrained(args.checkpoint)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    dataset = quality_dataset(split, processor, cache=False)  # each image is read once here: nothing to cache
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                        collate_fn=QualityDataCollator(processor.rescale_factor))
    with torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16):
        predictions = predict(model, loader)

    metrics = compute_iqa_metrics(predictions.scores, predictions.labels)
    for column, backbone_id in enumerate(model.config.backbone_ids):
        metrics[f"srocc_{backbone_id}"] = srocc(predictions.base_scores[:, column], predictions.labels)
    report = {"checkpoint": str(args.checkpoint), "dataset": benchmark.info.name, "split": args.split,
              "checkpoint_mos_range": model.config.mos_range, "dataset_mos_range": list(benchmark.mos_range),
              "precision": "bf16" if args.bf16 else "fp32", "metrics": metrics}
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(output / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_name", "mos", "score", *model.config.backbone_ids])
        for name, mos, score, bases in zip(split["image_name"], predictions.labels, predictions.scores,
                                           predictions.base_scores):
            writer.writerow([name, f"{mos:.6g}", f"{score:.6g}", *(f"{b:.6g}" for b in bases)])

    figure = Figure(figsize=(5, 5))  # no pyplot: no GUI backend needed on headless machines
    axes = figure.subplots()
    axes.scatter(predictions.labels, predictions.scores, s=8, alpha=0.6)
    axes.set_xlabel(f"{benchmark.info.pretty_name} MOS")
    axes.set_ylabel(f"predicted ({model.config.mos_name})")
    axes.set_title(f"{args.split}: SROCC {metrics['srocc']:.3f}, PLCC {metrics['plcc']:.3f} (n={metrics['n']})")
    figure.tight_layout()
    figure.savefig(output / "scatter.png", dpi=120)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
