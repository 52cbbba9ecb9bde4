"""Evaluating a checkpoint on a labelled split: every IQA metric (`metaqap_hf.metrics`), per-image predictions and
a scatter plot, with the images read through the inference path (`load_image` + the checkpoint's own image
processor, no augmentation). The function behind `metaqap evaluate`, `examples/evaluate_checkpoint.py` and
`benchmarks/accuracy.py`.

    >>> from metaqap_hf.evaluation import evaluate_checkpoint
    >>> report = evaluate_checkpoint("runs/lite/best", "biq2021", "/data/BIQ2021", "test", "runs/lite/eval-test")
    >>> report["metrics"]["srocc"]
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .data import get_benchmark
from .image_processing_metaqap import MetaQAPImageProcessor
from .metrics import compute_iqa_metrics, srocc
from .modeling_metaqap import MetaQAPModel
from .training.data import QualityDataCollator, quality_dataset
from .training.loop import Predictions, predict

__all__ = ["evaluate_checkpoint"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    dataset: str,
    data_dir: str | os.PathLike | None,
    split: str,
    output_dir: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "float32",
    batch_size: int = 16,
    num_workers: int = 0,
    limit: int | None = None,
    device: str | None = None,
    plot: bool = True,
) -> dict:
    """Score `split` of benchmark `dataset` with the checkpoint folder `checkpoint` and write the results.

    Images go through the inference path (`load_image` + the checkpoint's image processor, no augmentation), under
    bfloat16 autocast when `dtype` is bfloat16. `limit` keeps the first N images; `device` defaults to CUDA when
    available. Writes to `output_dir`: ``metrics.json`` (the returned report: `compute_iqa_metrics` plus each base
    model's SROCC as ``srocc_<backbone id>``), ``predictions.csv`` (image, MOS, score, base scores) and, with `plot`,
    ``scatter.png`` (predicted score against MOS; needs matplotlib, the ``plots`` extra).
    """
    compute_dtype = _DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if compute_dtype not in _PRECISION_NAMES:
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    if plot and importlib.util.find_spec("matplotlib") is None:
        raise ImportError("the scatter plot needs matplotlib: pip install 'metaqap-hf[plots]', or pass plot=False")
    benchmark = get_benchmark(dataset)
    splits = benchmark.load(data_dir)
    if split not in splits:
        raise ValueError(f"{benchmark.info.pretty_name} has no split {split!r}; its splits are {list(splits)}")
    images = splits[split]
    if limit is not None:
        images = images.select(range(min(limit, len(images))))

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = MetaQAPModel.from_pretrained(checkpoint).eval().to(device)
    processor = MetaQAPImageProcessor.from_pretrained(checkpoint)
    loader = DataLoader(quality_dataset(images, processor, cache=False),  # each image is read once: nothing to cache
                        batch_size=batch_size, num_workers=num_workers,
                        collate_fn=QualityDataCollator(processor.rescale_factor))
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=compute_dtype == torch.bfloat16):
        predictions = predict(model, loader)

    metrics = compute_iqa_metrics(predictions.scores, predictions.labels)
    for column, backbone_id in enumerate(model.config.backbone_ids):
        metrics[f"srocc_{backbone_id}"] = srocc(predictions.base_scores[:, column], predictions.labels)
    # the ablations: each base model alone, and their plain average instead of the meta-learner
    ablations = {backbone_id: compute_iqa_metrics(predictions.base_scores[:, column], predictions.labels)
                 for column, backbone_id in enumerate(model.config.backbone_ids)}
    ablations["mean of base models"] = compute_iqa_metrics(predictions.base_scores.mean(1), predictions.labels)
    report = {"checkpoint": str(checkpoint), "dataset": benchmark.info.name, "split": split,
              "checkpoint_mos_range": model.config.mos_range, "dataset_mos_range": list(benchmark.info.mos_range),
              "precision": _PRECISION_NAMES[compute_dtype], "metrics": metrics, "ablations": ablations}
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    _write_predictions(output / "predictions.csv", images["image_name"], predictions, model.config.backbone_ids)
    if plot:
        title = f"{split}: SROCC {metrics['srocc']:.3f}, PLCC {metrics['plcc']:.3f} (n={metrics['n']})"
        _save_scatter_plot(output / "scatter.png", predictions, f"{benchmark.info.pretty_name} MOS",
                           f"predicted ({model.config.mos_name})", title)
    return report


def _write_predictions(path: Path, names: Sequence[str], predictions: Predictions, backbone_ids: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_name", "mos", "score", *backbone_ids])
        for name, mos, score, bases in zip(names, predictions.labels, predictions.scores, predictions.base_scores):
            writer.writerow([name, f"{mos:.6g}", f"{score:.6g}", *(f"{b:.6g}" for b in bases)])


def _save_scatter_plot(path: Path, predictions: Predictions, x_label: str, y_label: str, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend needed on headless machines

    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.scatter(predictions.labels, predictions.scores, s=8, alpha=0.6)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
