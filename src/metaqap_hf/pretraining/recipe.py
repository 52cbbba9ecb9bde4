"""A recipe sized for one GPU: quality-aware pretraining, fine-tuning of each backbone, stacking, one checkpoint.

    BIQ2021 official train images (their content; never a test image) + pristine photos -> uint8 on the device
      -> pretraining (`QualityPretrainingModel`, every backbone, the chosen `objectives`; crops and distortions
         made on the device) for `time_budget_s`
      -> each backbone alone: fine-tuning on the train images' MOS (quality-aware loss; random crops and flips)
         for `finetune_budget_s`
      -> `stack_checkpoints` on the validation split carved from train (the meta-learner)
      -> ``save_pretrained(output_dir, max_shard_size="15MB")``, the processor, the card and ``recipe.json``

Inside a step nothing waits for the device: images stay on it as uint8, random numbers that pick crops, types and
levels are drawn on the host, the forward runs under bfloat16 autocast in channels-last, and losses are summed on
the device and read every `log_every` steps. Both stages stop on a wall-clock budget (a cosine learning rate
follows the elapsed share of it), or after `max_steps` (dry runs). On a CPU with the ``tiny`` backbones the whole
recipe runs in seconds: its CI test.

    >>> from metaqap_hf.pretraining.recipe import OneGPURecipe, pretrain_finetune_stack
    >>> pretrain_finetune_stack("/data/BIQ2021", "/data/pristine", "runs/one-gpu", OneGPURecipe())
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import image_column, load_biq2021
from ..devices import resolve_device, resolve_dtype
from ..distortions import DISTORTION_TYPES, NUM_LEVELS, distort
from ..factory import backbone_specs, create_model
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..modeling_metaqap import MetaQAPModel
from ..training.data import build_image_cache
from ..training.loop import AccelerateTrainingArguments, build_optimizer, initialize_head_bias
from ..training.stacking import stack_checkpoints
from .dataset import find_images
from .labels import PseudoMOSLabeler, full_reference_scores
from .objectives import (
    DISTORTION_CLASSES,
    OBJECTIVES,
    PRISTINE_CLASS,
    QualityPretrainingModel,
    distortion_class,
    weighted_objectives,
)
from .stage import PRETRAINING_MODEL_OPTIONS

__all__ = ["OneGPURecipe", "DeviceDistortionBatches", "pretrain_finetune_stack", "train_for"]

REPORT_FILE = "recipe.json"


@dataclass
class OneGPURecipe:
    """Settings of `pretrain_finetune_stack`; the defaults fit one H200 in about 8 minutes with BIQ2021's 10,000
    training images.

    Args:
        backbones: a `create_model` preset (``"lite"``; ``"tiny"`` for dry runs), each at `image_size`.
        image_side: every image is held at `image_side` x `image_side` (the image processor's resize).
        image_size: the backbones' input side; fine-tuning crops are this size.
        crop_size: pretraining crops (distorted at this size, then resized by the model).
        objectives, objective_weights: pretraining objectives (`objectives.OBJECTIVES`) and their weights.
        metrics: full-reference metrics of the regression objective's pseudo-MOS, calibrated on
            `calibration_batches` batches.
        time_budget_s: pretraining wall time, all backbones together. finetune_budget_s: per backbone.
        max_steps: also stop each stage after this many steps (dry runs).
        batch_size: crops per step (even: ranking takes pairs).
        validation_fraction: of the official train images, held out for stacking (and never trained on).
        dtype, device: ``"auto"``: bfloat16 autocast where native, the GPU when there is one.
        max_shard_size: the largest checkpoint file, of the result and of every stage's checkpoint (a remote GPU
            machine returns files of at most 16 MiB).
    """

    backbones: str = "lite"
    image_side: int = 512
    image_size: int = 448
    crop_size: int = 384
    objectives: tuple[str, ...] = OBJECTIVES
    objective_weights: dict[str, float] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("gmsd", "haarpsi", "mdsi")
    calibration_batches: int = 4
    time_budget_s: float = 180.0
    finetune_budget_s: float = 40.0
    max_steps: int | None = None
    batch_size: int = 128
    learning_rate: float = 3e-4
    finetune_learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    meta_learner: str = "stepwise"
    pretrained: bool = True
    dtype: str = "auto"
    device: str = "auto"
    num_workers: int = 8
    log_every: int = 25
    max_shard_size: str = "15MB"
    seed: int = 0

    def __post_init__(self) -> None:
        weighted_objectives(self.objectives, self.objective_weights)  # checked here, before any image is decoded
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2 (ranking takes pairs); got {self.batch_size}")
        if not self.crop_size <= self.image_side or not self.image_size <= self.image_side:
            raise ValueError(f"crop_size ({self.crop_size}) and image_size ({self.image_size}) must fit in "
                             f"image_side ({self.image_side})")


def _host_generator(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


def _crops(images: torch.Tensor, indices: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Random `size` crops (float on [0, 1]) of uint8 `images[indices]`, gathered on the images' device with
    offsets drawn on the host."""
    side_h, side_w = images.shape[-2:]
    device = images.device
    tops = torch.from_numpy(rng.integers(0, side_h - size + 1, len(indices))).to(device, non_blocking=True)
    lefts = torch.from_numpy(rng.integers(0, side_w - size + 1, len(indices))).to(device, non_blocking=True)
    steps = torch.arange(size, device=device)
    rows = (tops[:, None] + steps)[:, None, :, None]
    columns = (lefts[:, None] + steps)[:, None, None, :]
    chosen = torch.from_numpy(indices).to(device, non_blocking=True)[:, None, None, None]
    channels = torch.arange(3, device=device)[None, :, None, None]
    return images[chosen, channels, rows, columns].float().div_(255.0)


class DeviceDistortionBatches:
    """Endless pretraining batches from uint8 content held on a device: random crops, each pair of rows (2k, 2k+1)
    one crop at two levels of one type (the first left pristine in 2 of 126 pairs, so that each class of
    `DISTORTION_CLASSES` is about as frequent), its class and, with a `labeler`, its pseudo-MOS. Types, levels and
    crops are drawn on the host from (seed, batch number); the crops are distorted per (type, level) group."""

    def __init__(self, content: torch.Tensor, crop_size: int, batch_size: int, *, seed: int = 0,
                 labeler: PseudoMOSLabeler | None = None) -> None:
        self.content, self.crop_size, self.batch_size, self.seed = content, crop_size, batch_size, seed
        self.labeler = labeler
        self.batches_drawn = 0

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pristine crops, distorted crops, classes) of the next batch, all on the content's device."""
        rng = _host_generator(self.seed, self.batches_drawn)
        self.batches_drawn += 1
        pairs = self.batch_size // 2
        pristine = _crops(self.content, rng.integers(0, len(self.content), pairs), self.crop_size, rng)
        pristine = pristine.repeat_interleave(2, dim=0)
        kinds = np.repeat(rng.integers(0, len(DISTORTION_TYPES), pairs), 2)
        levels = np.stack([rng.permutation(NUM_LEVELS)[:2] + 1 for _ in range(pairs)]).reshape(-1)
        undistorted = np.zeros(self.batch_size, bool)
        undistorted[0::2] = rng.random(pairs) < 2 / len(DISTORTION_CLASSES)
        classes = np.array([PRISTINE_CLASS if keep else distortion_class(DISTORTION_TYPES[kind], int(level))
                            for keep, kind, level in zip(undistorted, kinds, levels)])
        distorted = pristine.clone()
        generator = torch.Generator(device=pristine.device).manual_seed(int(rng.integers(2**62)))
        for group in np.unique(classes[classes != PRISTINE_CLASS]):
            rows = torch.from_numpy(np.flatnonzero(classes == group)).to(pristine.device, non_blocking=True)
            kind, level = divmod(int(group) - 1, NUM_LEVELS)
            distorted[rows] = distort(pristine[rows], DISTORTION_TYPES[kind], level + 1, generator=generator)
        return pristine, distorted, torch.from_numpy(classes).to(pristine.device, non_blocking=True)

    def __call__(self) -> dict[str, torch.Tensor]:
        pristine, distorted, classes = self.draw()
        batch = {"pixel_values": distorted, "distortion_class": classes}
        if self.labeler is not None:
            batch["labels"] = self.labeler.label_images(pristine, distorted)
        return batch

    def calibrate(self, num_batches: int, metrics: Sequence[str]) -> PseudoMOSLabeler:
        """Fit the pseudo-MOS labeler on FR scores of `num_batches` batches (from seeds the training batches do
        not use) and keep it for the batches that follow."""
        calibration = DeviceDistortionBatches(self.content, self.crop_size, self.batch_size, seed=self.seed + 1)
        scores = {name: [] for name in metrics}
        for _ in range(num_batches):
            pristine, distorted, _ = calibration.draw()
            for name, values in full_reference_scores(pristine, distorted, metrics).items():
                scores[name].append(values)
        self.labeler = PseudoMOSLabeler.fit({name: torch.cat(values) for name, values in scores.items()})
        return self.labeler


class MOSCropBatches:
    """Endless fine-tuning batches: random `size` crops of uint8 images on a device, half of them mirrored
    (quality-preserving augmentation), with their MOS."""

    def __init__(self, images: torch.Tensor, mos: torch.Tensor, size: int, batch_size: int, seed: int = 0):
        self.images, self.mos, self.size, self.batch_size, self.seed = images, mos, size, batch_size, seed
        self.batches_drawn = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        rng = _host_generator(self.seed, self.batches_drawn)
        self.batches_drawn += 1
        indices = rng.integers(0, len(self.images), self.batch_size)
        crops = _crops(self.images, indices, self.size, rng)
        mirrored = torch.from_numpy(np.flatnonzero(rng.random(self.batch_size) < 0.5)).to(crops.device)
        crops[mirrored] = crops[mirrored].flip(-1)
        return {"pixel_values": crops, "labels": self.mos[torch.from_numpy(indices).to(self.mos.device)]}


def train_for(model: MetaQAPModel, batches: Callable[[], dict], *, budget_s: float, max_steps: int | None,
              learning_rate: float, head_learning_rate: float, dtype: torch.dtype, log_every: int,
              log: Callable[[dict], None]) -> dict:
    """Train `model` (already on its device) on `batches()` until `budget_s` seconds have passed or `max_steps`
    steps are done. The learning rate follows a cosine over the elapsed share of the budget. The loss is read
    back every `log_every` steps only. Returns steps, samples, wall time and the last logged loss."""
    model.train()
    # the Accelerate loop's optimizer (parameter groups, weight decay), without its loop
    optimizer = build_optimizer(model, AccelerateTrainingArguments(
        output_dir="", learning_rate=learning_rate, head_learning_rate=head_learning_rate))
    base_rates = [group["lr"] for group in optimizer.param_groups]
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    started, step, samples, window, last_loss = time.monotonic(), 0, 0, None, None
    while (elapsed := time.monotonic() - started) < budget_s and (max_steps is None or step < max_steps):
        for group, rate in zip(optimizer.param_groups, base_rates):
            group["lr"] = rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, elapsed / budget_s)))
        batch = batches()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        samples += len(batch["pixel_values"])
        window = loss.detach().float() if window is None else window + loss.detach().float()
        if step % log_every == 0:
            last_loss = float(window) / log_every  # the one read-back per `log_every` steps
            window = None
            log({"step": step, "loss": last_loss, "elapsed_s": round(time.monotonic() - started, 1)})
    if window is not None:
        last_loss = float(window) / (step % log_every)
    wall = time.monotonic() - started
    return {"steps": step, "samples": samples, "wall_s": round(wall, 1),
            "samples_per_s": round(samples / wall, 1) if wall else None, "last_loss": last_loss}


def _on_device(images: Sequence, processor: MetaQAPImageProcessor, device: torch.device, workers: int) -> torch.Tensor:
    """Decode and resize (the image processor, `workers` processes) into one uint8 tensor on `device`."""
    pixels = build_image_cache(images, processor, num_workers=workers, desc="decoding images")
    tensor = torch.from_numpy(np.ascontiguousarray(pixels))
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


def pretrain_finetune_stack(
    biq2021_dir: str | os.PathLike,
    pristine_dir: str | os.PathLike | Sequence[str | os.PathLike] | None,
    output_dir: str | os.PathLike,
    recipe: OneGPURecipe | None = None,
    *,
    weight_sources: dict | None = None,
    log: Callable[[dict], None] = lambda record: print(json.dumps(record), flush=True),
) -> dict:
    """Run the one-GPU recipe (module docstring) on BIQ2021 in its official layout at `biq2021_dir` and the
    pristine photos of `pristine_dir`; write the stacked checkpoint to `output_dir` (loadable with `AutoModel` and
    `pipeline("image-quality")`). Intermediate checkpoints go to ``output_dir/stages``. Returns the report, also
    written to ``output_dir/recipe.json``."""
    recipe = recipe or OneGPURecipe()
    output_dir = Path(output_dir)
    stages = output_dir / "stages"
    device = resolve_device(recipe.device)
    dtype = resolve_dtype(recipe.dtype, device)
    torch.manual_seed(recipe.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report: dict = {"recipe": asdict(recipe), "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                    "stages": {}}
    started = time.monotonic()

    splits = load_biq2021(biq2021_dir, validation_fraction=recipe.validation_fraction, seed=recipe.seed)
    processor = MetaQAPImageProcessor(size={"height": recipe.image_side, "width": recipe.image_side})
    train_images = _on_device(image_column(splits["train"]), processor, device, recipe.num_workers)
    train_mos = torch.tensor(splits["train"]["mos"], dtype=torch.float32, device=device)
    content = [train_images]  # pretraining content: train images only (validation is for stacking, test unread)
    pristine = find_images(pristine_dir) if pristine_dir is not None else []
    if pristine:
        content.append(_on_device([str(path) for path in pristine], processor, device, recipe.num_workers))
    content = torch.cat(content)
    report["data"] = {"train_images": len(train_images), "pristine_images": len(pristine),
                      "validation_images": len(splits["validation"]), "test_images_read": 0,
                      "decode_s": round(time.monotonic() - started, 1)}
    log({"stage": "data", **report["data"]})

    # Stage 1: pretraining every backbone together on the objectives.
    weights = weighted_objectives(recipe.objectives, recipe.objective_weights)
    specs = backbone_specs(recipe.backbones, recipe.image_size)
    model = create_model(specs, pretrained=recipe.pretrained, weight_sources=weight_sources, seed=recipe.seed,
                         model_class=QualityPretrainingModel, pretraining_objectives=weights,
                         **PRETRAINING_MODEL_OPTIONS).to(device, memory_format=torch.channels_last)
    batches = DeviceDistortionBatches(content, recipe.crop_size, recipe.batch_size, seed=recipe.seed)
    if "regression" in weights:
        labeler = batches.calibrate(recipe.calibration_batches, recipe.metrics)
        initialize_head_bias(model, labeler(full_reference_scores(*batches.draw()[:2], recipe.metrics)).cpu())
    report["stages"]["pretraining"] = train_for(
        model, batches, budget_s=recipe.time_budget_s, max_steps=recipe.max_steps,
        learning_rate=recipe.learning_rate, head_learning_rate=recipe.head_learning_rate, dtype=dtype,
        log_every=recipe.log_every, log=lambda record: log({"stage": "pretraining", **record}))
    pretrained_dir = stages / "pretrained"
    model.save_pretrained(pretrained_dir, max_shard_size=recipe.max_shard_size)  # every file can come back
    del model, batches

    # Stage 2: each backbone alone, fine-tuned on the training images' MOS from the pretrained backbone.
    mos_options = {"mos_range": [0.0, 1.0], "mos_name": "BIQ2021 MOS (0-1)"}
    checkpoints = []
    for index, spec in enumerate(specs):
        single = create_model([spec], pretrained=False, backbones_from=pretrained_dir, seed=recipe.seed,
                              **mos_options).to(device, memory_format=torch.channels_last)
        initialize_head_bias(single, splits["train"]["mos"])
        name = spec["name"]
        report["stages"][f"finetuning {name}"] = train_for(
            single, MOSCropBatches(train_images, train_mos, recipe.image_size, recipe.batch_size,
                                   seed=recipe.seed + index),
            budget_s=recipe.finetune_budget_s, max_steps=recipe.max_steps,
            learning_rate=recipe.finetune_learning_rate, head_learning_rate=recipe.head_learning_rate,
            dtype=dtype, log_every=recipe.log_every, log=lambda record: log({"stage": f"finetuning {name}", **record}))
        checkpoint = stages / f"finetuned-{index}-{name}"
        single.save_pretrained(checkpoint, max_shard_size=recipe.max_shard_size)
        processor.save_pretrained(checkpoint)
        checkpoints.append(checkpoint)
        del single
    del train_images, train_mos, content
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # Stage 3: the meta-learner on the held-out validation images, then the checkpoint in shards.
    stacked_dir = stages / "stacked"
    fit = stack_checkpoints(checkpoints, splits, stacked_dir, mos_range=(0.0, 1.0), method=recipe.meta_learner,
                            training_command="metaqap_hf.pretraining.recipe.pretrain_finetune_stack")
    report["stages"]["stacking"] = {"method": fit.method, "coefficients": fit.coefficients, "r2": fit.r2}
    MetaQAPModel.from_pretrained(stacked_dir).save_pretrained(output_dir, max_shard_size=recipe.max_shard_size)
    processor.save_pretrained(output_dir)
    shutil.copy(stacked_dir / "README.md", output_dir / "README.md")
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["files"] = {path.name: path.stat().st_size for path in sorted(output_dir.iterdir()) if path.is_file()}
    (output_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log({"stage": "done", "output_dir": str(output_dir), "wall_s": report["wall_s"]})
    return report
