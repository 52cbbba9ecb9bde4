"""Whole runs assembled from the training room's parts, shared by `metaqap train` / `metaqap evaluate` and the
example scripts, so that a command line and a Python call do exactly the same thing.

- `finetune`: a fresh `MetaQAPModel` for a registered benchmark (its MOS scale, ImageNet backbone weights), trained
  with the Accelerate loop on the ``train`` split and selected on the ``validation`` split carved from it.
- `evaluate_checkpoint`: one split of a benchmark scored by a saved checkpoint through the inference path
  (`load_image` + the checkpoint's own image processor), with every IQA metric, per-image predictions and a plot.

    >>> from metaqap_hf.training.recipes import evaluate_checkpoint, finetune
    >>> result = finetune("biq2021", "/data/BIQ2021", "runs/lite", num_epochs=10, cache_dir="/data/cache")
    >>> evaluate_checkpoint(result.best_model_dir, "biq2021", "/data/BIQ2021", "test", "runs/lite/eval-test")
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader

from ..configuration_metaqap import LITE_BACKBONES, MetaQAPConfig
from ..data import get_benchmark
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..metrics import compute_iqa_metrics, srocc
from ..modeling_metaqap import MetaQAPModel
from ..weights import load_pretrained_backbones
from .accelerate_loop import AccelerateTrainingArguments, TrainingResult, train_with_accelerate
from .augment import QualityAugmentation
from .evaluation import Predictions, predict
from .model_setup import initialize_head_bias
from .quality_dataset import QualityDataCollator, quality_dataset, training_datasets

__all__ = [
    "BACKBONE_PRESETS",
    "TINY_BACKBONES",
    "build_model",
    "evaluate_checkpoint",
    "finetune",
    "load_training_splits",
]

# timm's random `test_*` models: a whole run in seconds on a CPU, for CI and smoke tests. No ImageNet weights exist.
TINY_BACKBONES = (
    {"name": "test_efficientnet", "image_size": 64},
    {"name": "test_resnet", "image_size": 64},
)
# "lite" (the four), each lite backbone alone by its timm name, and "tiny" (random timm test models, for CI).
BACKBONE_PRESETS: Mapping[str, tuple[dict, ...]] = MappingProxyType({
    "lite": LITE_BACKBONES, "tiny": TINY_BACKBONES, **{spec["name"]: (spec,) for spec in LITE_BACKBONES}})
_PRESETS_WITHOUT_WEIGHTS = frozenset({"tiny"})
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def load_training_splits(
    dataset: str,
    data_dir: str | os.PathLike | None,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
) -> DatasetDict:
    """Benchmark `dataset` with ``validation`` carved from its training images (`validation_fraction`, `seed`);
    `train_limit` / `validation_limit` keep only the first N images of those splits (smoke runs)."""
    splits = get_benchmark(dataset).load(data_dir, validation_fraction=validation_fraction, seed=seed)
    for name, limit in (("train", train_limit), ("validation", validation_limit)):
        if limit is not None:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    return splits


def build_model(
    dataset: str,
    *,
    backbones: str | Sequence[Mapping] = "lite",
    loss: str = "quality_aware",
    pretrained: bool = True,
    weight_sources: Mapping[str, str | os.PathLike] | None = None,
    seed: int = 0,
) -> MetaQAPModel:
    """A fresh `MetaQAPModel` on benchmark `dataset`'s MOS scale, heads seeded with `seed`.

    `backbones` is a preset name (``"lite"``, ``"tiny"``; see `BACKBONE_PRESETS`) or a list of backbone specs. With
    `pretrained` the backbones get ImageNet weights (`metaqap_hf.weights.load_pretrained_backbones`, from
    `weight_sources` files, else the weights cache, ``$METAQAP_CACHE``); the ``"tiny"`` preset's test models have
    none and stay random.
    """
    benchmark = get_benchmark(dataset)
    if isinstance(backbones, str):
        if backbones not in BACKBONE_PRESETS:
            raise ValueError(f"unknown backbone preset {backbones!r}; choose one of {sorted(BACKBONE_PRESETS)}")
        preset, specs = backbones, BACKBONE_PRESETS[backbones]
    else:
        preset, specs = None, backbones
    info = benchmark.info
    torch.manual_seed(seed)
    config = MetaQAPConfig(backbones=[dict(spec) for spec in specs], mos_range=list(benchmark.mos_range), loss=loss,
                           mos_name=f"{info.pretty_name} MOS ({info.mos_min:g}-{info.mos_max:g})")
    model = MetaQAPModel(config)
    if pretrained and preset not in _PRESETS_WITHOUT_WEIGHTS:
        load_pretrained_backbones(model, weight_sources)
    return model


def finetune(
    dataset: str,
    data_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    *,
    backbones: str | Sequence[Mapping] = "lite",
    pretrained: bool = True,
    weight_sources: Mapping[str, str | os.PathLike] | None = None,
    loss: str = "quality_aware",
    image_size: int = 512,
    validation_fraction: float = 0.1,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    seed: int = 0,
    **training_options: object,
) -> TrainingResult:
    """Fine-tune a fresh model (`build_model`) on benchmark `dataset` with `train_with_accelerate`.

    The images are resized to `image_size` by the image processor (512 is the inference default) and decoded once
    (`cache`; on disk under `cache_dir` when given); training images are augmented (`QualityAugmentation`). The
    test split is never read. `training_options` are `AccelerateTrainingArguments` fields (``num_epochs``,
    ``max_steps``, ``per_device_batch_size``, ``gradient_accumulation_steps``, ``learning_rate``,
    ``mixed_precision``, ``train_backbones``, ``save_every_steps``, ``early_stopping_patience``...). Rerunning into
    the same `output_dir` resumes from its last checkpoint. Writes what `train_with_accelerate` writes (``best/``,
    ``final/``, ``checkpoints/``, ``metrics.jsonl``, ``training_result.json``) and returns its result.
    """
    splits = load_training_splits(dataset, data_dir, validation_fraction=validation_fraction, seed=seed,
                                  train_limit=train_limit, validation_limit=validation_limit)
    processor = MetaQAPImageProcessor(size={"height": image_size, "width": image_size})
    train, validation = training_datasets(splits, processor, augmentation=QualityAugmentation(), cache=cache,
                                          cache_dir=cache_dir, num_workers=num_workers, seed=seed)
    model = build_model(dataset, backbones=backbones, loss=loss, pretrained=pretrained,
                        weight_sources=weight_sources, seed=seed)
    initialize_head_bias(model, train.labels)
    arguments = AccelerateTrainingArguments(output_dir=str(output_dir), seed=seed, num_workers=num_workers,
                                            **training_options)
    return train_with_accelerate(model, train, validation, arguments, image_processor=processor)


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
              "checkpoint_mos_range": model.config.mos_range, "dataset_mos_range": list(benchmark.mos_range),
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
