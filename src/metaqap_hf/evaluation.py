"""Evaluating a checkpoint on a labelled split of any dataset: every IQA metric (`metaqap_hf.metrics`), per-image
predictions and a scatter plot, with the images read through the inference path (`load_image` + the checkpoint's
own image processor, no augmentation), from files or embedded bytes. The function behind `metaqap evaluate`,
`examples/evaluate_checkpoint.py` and `benchmarks/accuracy.py`.

    >>> from metaqap_hf.evaluation import evaluate_checkpoint
    >>> report = evaluate_checkpoint("runs/lite/best", "biq2021", "runs/lite/eval-test", data_dir="/data/BIQ2021")
    >>> report = evaluate_checkpoint("runs/mine/best", "mydata/scores.csv", "runs/mine/eval", mos_range=(1, 5))
    >>> report["metrics"]["srocc"]
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

from dataclasses import dataclass

import numpy as np
import torch
from datasets import concatenate_datasets
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .cards import add_card_evaluation, card_evaluation, card_is_rendered, read_model_card_facts
from .data import DatasetSource, load_dataset_source
from .data.images import DecodedImages, image_column
from .data.splits import VALIDATION_FRACTION
from .devices import resolve_device, resolve_dtype
from .image_processing_metaqap import MetaQAPImageProcessor
from .image_utils import rescale_pixels
from .metrics import ablation_metrics, compute_iqa_metrics, srocc
from .modeling_metaqap import MetaQAPModel

__all__ = ["LabelledBatches", "Predictions", "evaluate_checkpoint", "predict"]

ALL_SPLITS = "all"
_PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}


@dataclass
class Predictions:
    """One pass over a labelled dataset: scores (N,), base scores (N, num_backbones), labels (N,), all on the
    checkpoint's MOS scale, and the loss averaged over images (correlation terms are per batch)."""

    scores: np.ndarray
    base_scores: np.ndarray
    labels: np.ndarray
    loss: float


@torch.no_grad()
def predict(model: torch.nn.Module, dataloader, accelerator=None, *, progress: bool = True) -> Predictions:
    """Run `model` in eval mode over `dataloader` (batches of `pixel_values` and `labels`).

    With an `accelerate.Accelerator` (and a dataloader it prepared), predictions from every process are gathered
    with the padding of the last batch removed; without one, batches are moved to the model's device.
    """
    model.eval()
    device = next(model.parameters()).device
    scores, base_scores, labels, losses, counts = [], [], [], [], []
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    for batch in tqdm(dataloader, desc="evaluating", unit="batch", disable=not show, leave=False):
        if accelerator is None:
            batch = {key: value.to(device) for key, value in batch.items()}
        output = model(**batch)
        batch_scores, batch_bases, batch_labels = output.score.float(), output.base_scores.float(), batch["labels"]
        batch_loss = output.loss.detach().float().reshape(1) * len(batch_labels)
        batch_count = torch.tensor([len(batch_labels)], device=batch_loss.device, dtype=torch.float32)
        if accelerator is not None:
            batch_scores, batch_bases, batch_labels = accelerator.gather_for_metrics(
                (batch_scores, batch_bases, batch_labels))
            batch_loss, batch_count = accelerator.gather((batch_loss, batch_count))
        scores.append(batch_scores.cpu())
        base_scores.append(batch_bases.cpu())
        labels.append(batch_labels.float().cpu())
        losses.append(batch_loss.sum().cpu())
        counts.append(batch_count.sum().cpu())
    loss = float(torch.stack(losses).sum() / torch.stack(counts).sum())
    return Predictions(torch.cat(scores).numpy(), torch.cat(base_scores).numpy(), torch.cat(labels).numpy(), loss)


class LabelledBatches:
    """Batches of `pixel_values` and `labels` over a datasets split with an ``image`` column and `label_column`,
    read through the inference path (`DecodedImages`: `load_dataset_image` + `resize_pixels`, then
    `rescale_pixels`), no augmentation and no cache (each image is read once); `num_workers` processes decode."""

    def __init__(self, split, image_processor, *, label_column: str = "mos", batch_size: int = 16,
                 num_workers: int = 0):
        if label_column not in split.column_names:
            raise ValueError(f"the split has no label column {label_column!r}; its columns are {split.column_names}")
        self.labels = torch.tensor(np.asarray(split[label_column][:], dtype=np.float32))
        self.image_processor = image_processor
        self.loader = DataLoader(DecodedImages(image_column(split), image_processor), batch_size=batch_size,
                                 num_workers=num_workers, collate_fn=torch.stack)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        start = 0
        for pixels in self.loader:
            yield {"pixel_values": rescale_pixels(pixels, self.image_processor),
                   "labels": self.labels[start:start + len(pixels)]}
            start += len(pixels)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    dataset: str | os.PathLike | DatasetSource,
    output_dir: str | os.PathLike,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    mos_range: Sequence[float] | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    dtype: str | torch.dtype = "auto",
    batch_size: int = 16,
    num_workers: int = 0,
    limit: int | None = None,
    device: str | None = None,
    plot: bool = True,
    add_to_card: bool = False,
) -> dict:
    """Score `split` of `dataset` with the checkpoint folder `checkpoint` and write the results.

    `dataset` is anything `metaqap_hf.data.load_dataset_source` resolves (a registered benchmark with `data_dir`, a
    CSV/JSONL table with `mos_range`, a prepared folder, a hub id, a `DatasetDict`; `validation_fraction` and
    `seed` give the validation split carved from train where the source has none). `split` is ``train``,
    ``validation``, ``test`` or ``all`` (every image of every split); by default ``test`` when the dataset has
    one, else ``all``. Images go through the inference path (`load_image` + the checkpoint's image processor, no
    augmentation), under bfloat16 autocast when `dtype` is bfloat16 (``"auto"``: on GPUs and on CPUs that compute it
    natively, else float32; `metaqap_hf.devices.resolve_dtype`). `limit` keeps the first N images; `device`
    defaults to CUDA when available (`metaqap_hf.devices.resolve_device`). Writes to `output_dir`:
    ``metrics.json`` (the returned report: `compute_iqa_metrics` plus each base model's SROCC as
    ``srocc_<backbone id>``), ``predictions.csv`` (image, MOS, score, base scores) and, with `plot`, ``scatter.png`` (predicted score against MOS; needs matplotlib, the
    ``plots`` extra). With `add_to_card`, the figures also go into the checkpoint's model card (its
    ``model_card.json`` and README.md), replacing an earlier row of the same dataset and split.
    """
    device = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, device)
    if plot and importlib.util.find_spec("matplotlib") is None:
        raise ImportError("the scatter plot needs matplotlib: pip install 'metaqap-hf[plots]', or pass plot=False")
    if add_to_card:
        _check_card_takes_figures(Path(checkpoint), limit)
    source = load_dataset_source(dataset, data_dir, mos_range=mos_range, validation_fraction=validation_fraction,
                                 seed=seed)
    split = split or ("test" if "test" in source.dataset else ALL_SPLITS)
    if split == ALL_SPLITS:
        images = concatenate_datasets(list(source.dataset.values()))
    elif split in source.dataset:
        images = source.dataset[split]
    else:
        raise ValueError(f"{source.name} has no split {split!r}; its splits are {list(source.dataset)} "
                         f"(or {ALL_SPLITS!r} for every image)")
    if limit is not None:
        images = images.select(range(min(limit, len(images))))

    model = MetaQAPModel.from_pretrained(checkpoint).eval().to(device)
    processor = MetaQAPImageProcessor.from_pretrained(checkpoint)
    batches = LabelledBatches(images, processor, batch_size=batch_size, num_workers=num_workers)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=compute_dtype == torch.bfloat16):
        predictions = predict(model, batches)

    metrics = compute_iqa_metrics(predictions.scores, predictions.labels)
    for column, backbone_id in enumerate(model.config.backbone_ids):
        metrics[f"srocc_{backbone_id}"] = srocc(predictions.base_scores[:, column], predictions.labels)
    ablations = ablation_metrics(predictions.base_scores, predictions.labels, model.config.backbone_ids)
    report = {"checkpoint": str(checkpoint), "dataset": source.dataset_id, "dataset_origin": source.origin,
              "split": split, "checkpoint_mos_range": model.config.mos_range,
              "dataset_mos_range": list(source.mos_range), "precision": _PRECISION_NAMES[compute_dtype],
              "metrics": metrics, "ablations": ablations}
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    _write_predictions(output / "predictions.csv", images["image_name"][:], predictions, model.config.backbone_ids)
    if plot:
        title = f"{split}: SROCC {metrics['srocc']:.3f}, PLCC {metrics['plcc']:.3f} (n={metrics['n']})"
        _save_scatter_plot(output / "scatter.png", predictions, source.mos_name,
                           f"predicted ({model.config.mos_name})", title)
    if add_to_card:
        evaluation = card_evaluation(metrics, dataset_name=source.name, dataset_id=source.dataset_id, split=split,
                                     num_images=metrics["n"])
        if evaluation is None:
            raise ValueError(f"the metrics on {source.name} {split} are not all finite numbers (see "
                             f"{output / 'metrics.json'}); nothing was added to the card")
        report["card"] = str(add_card_evaluation(checkpoint, evaluation))
    return report


def _check_card_takes_figures(checkpoint: Path, limit: int | None) -> None:
    """Refuse `add_to_card` before any work when the figures could not go on the card."""
    if limit is not None:
        raise ValueError("figures of the first images only (limit) do not belong on a model card")
    if read_model_card_facts(checkpoint) is None:
        raise FileNotFoundError(f"{checkpoint}: no model_card.json to add the figures to (checkpoints written by "
                                "metaqap's training commands have one)")
    if not card_is_rendered(checkpoint):
        raise FileExistsError(f"{checkpoint / 'README.md'} was edited by hand: add the figures there yourself, or "
                              f"render it again first (`metaqap card render {checkpoint} --overwrite`, which drops "
                              "the edits)")


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
