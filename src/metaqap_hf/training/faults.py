"""Training the fault head (`config.fault_head`): what is wrong with a photo, learnt from synthetic distortions on the
frozen features of a trained checkpoint. The library behind `metaqap train-faults`.

    pristine photos (every `holdout_every`-th held out, never read here) + a dataset's training images (never test)
      -> samples: each image distorted by drawn (type, level) pairs, every pair equally often; "none" = the
         undistorted pristine photos and the dataset images rated at least `none_min_quality`
      -> decoded, distorted at the image's own size, 8-bit, the checkpoint's processor: what a file of it would be
      -> every backbone's pooled features, concatenated (cached in chunks, so an interrupted run resumes)
      -> a `FaultHead` trained with class-balanced cross-entropy; epochs and an offset of the "none" logit chosen on
         a held-out part of the source images, then refit on all -> the checkpoint with its head, scores untouched

    >>> from metaqap_hf.training.faults import train_faults
    >>> report = train_faults(DEFAULT_MODEL_PATH, "runs/with-faults", pristine=["pristine/"], content="biq2021",
    ...                       data_dir="BIQ2021/")
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from tqdm.auto import tqdm

from ..cards import command_line
from ..default_model import DEFAULT_MODEL_PATH
from ..devices import resolve_device, resolve_dtype
from ..distortions import DISTORTION_TYPES, NUM_LEVELS, distort
from ..distortions.families import NO_FAULT, fault_head_spec
from ..files import walk_files
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..image_utils import load_image_tensor, pixel_values
from ..modeling_metaqap import FaultHead, MetaQAPModel
from ..weights import store_in_half_precision
from .frozen import fit_on_features

__all__ = ["FaultRecipe", "FaultSample", "fault_features", "fault_samples", "render_sample", "split_pristine",
           "train_fault_head", "train_faults"]

REPORT_FILE = "fault_report.json"


@dataclass
class FaultRecipe:
    """What the fault head is trained on and how (the defaults trained the bundled model's head)."""

    distorted_per_pristine: int = 8  # distorted versions of each pristine training photo (plus the photo itself)
    distorted_per_image: int = 1  # distorted versions of each dataset training image
    none_min_quality: float = 0.8  # dataset images at least this good (0-1 along the MOS range) are also "none"
    holdout_every: int = 5  # every 5th pristine photo (in file order) is held out for the benchmark
    validation_every: int = 5  # every 5th source image chooses the epochs (then all are used)
    hidden_size: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_epochs: int = 150
    # Added to the "none" logit, chosen on validation among these: the one with the best mean of the "none" rate on
    # undistorted images and the family accuracy at levels 3-5 (balanced training alone says "none" too rarely)
    none_offsets: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    seed: int = 0


@dataclass(frozen=True)
class FaultSample:
    """One training image: `source` distorted by `kind` at `level` (`kind` "none", level 0: as it is), with the
    random choices of the distortion drawn from `seed`."""

    source: str
    kind: str
    level: int
    seed: int
    group: int  # the source image's number: samples of one image stay on one side of the validation split


def split_pristine(sources: Sequence[str | os.PathLike], every: int) -> tuple[list[str], list[str]]:
    """(training, held-out) pristine photos of `sources` (folders searched recursively, or image files; in sorted
    order): every `every`-th (1-based) is held out. A source that cannot be used is an error naming it."""
    walk = walk_files(sources, images_only=True)
    if walk.problems or not walk.files:
        shown = "; ".join(f"{path}: {reason}" for path, reason in walk.problems[:3]) or "no images in them"
        raise FileNotFoundError(f"pristine photos {[str(source) for source in sources]}: {shown}")
    paths = [str(path) for path in walk.files]
    return ([p for i, p in enumerate(paths) if (i + 1) % every],
            [p for i, p in enumerate(paths) if not (i + 1) % every])


def fault_samples(pristine: Sequence[str], content: Sequence[str], content_none: Sequence[bool],
                  recipe: FaultRecipe) -> list[FaultSample]:
    """The training samples: each pristine photo as it is and `distorted_per_pristine` times distorted, each
    content image `distorted_per_image` times (and as it is where `content_none`). The (type, level) pairs are
    dealt from shuffled decks of all 125, so every pair occurs equally often."""
    rng = np.random.default_rng(recipe.seed)
    pairs = [(kind, level) for kind in DISTORTION_TYPES for level in range(1, NUM_LEVELS + 1)]
    deck: list[tuple[str, int]] = []

    def deal() -> tuple[str, int]:
        if not deck:
            deck.extend(pairs[i] for i in rng.permutation(len(pairs)))
        return deck.pop()

    samples = []
    sources = [(path, recipe.distorted_per_pristine, True) for path in pristine]
    sources += [(path, recipe.distorted_per_image, none) for path, none in zip(content, content_none)]
    for group, (path, count, as_none) in enumerate(sources):
        if as_none:
            samples.append(FaultSample(path, NO_FAULT, 0, 0, group))
        for _ in range(count):
            samples.append(FaultSample(path, *deal(), int(rng.integers(2**62)), group))
    return samples


def render_sample(sample: FaultSample) -> Image.Image:
    """The sample as an 8-bit RGB image at the source's own size, as a file of it would decode."""
    image = load_image_tensor(sample.source)[None]
    if sample.kind != NO_FAULT:
        image = distort(image, sample.kind, sample.level, generator=torch.Generator().manual_seed(sample.seed))
    pixels = (image[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


@torch.inference_mode()
def fault_features(model: MetaQAPModel, processor, images: Sequence[Image.Image], *,
                   dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Every backbone's pooled features of `images`, concatenated: the fault head's input (N, D) float32."""
    device = next(model.parameters()).device
    batch = pixel_values(images, processor).to(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return torch.cat([model.base_features(batch, i) for i in range(len(model.heads))], dim=1).float()


def _weights_digest(model: MetaQAPModel) -> str:
    """What the features depend on besides the images: the backbones' specs and weights."""
    digest = hashlib.sha256(json.dumps(model.config.backbones, sort_keys=True).encode())
    for name, tensor in model.backbones.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _chunk_key(weights: str, samples: Sequence[FaultSample], dtype: torch.dtype) -> str:
    identity = {"weights": weights, "dtype": str(dtype), "samples": [asdict(sample) for sample in samples],
                "files": sorted({(s.source, os.stat(s.source).st_size, os.stat(s.source).st_mtime_ns)
                                 for s in samples})}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def extract_sample_features(model: MetaQAPModel, processor, samples: Sequence[FaultSample], *,
                            dtype: torch.dtype, cache_dir: str | os.PathLike | None, batch_size: int = 16,
                            chunk_size: int = 256) -> np.ndarray:
    """`fault_features` of every sample, in chunks of `chunk_size` saved to `cache_dir` (when given) and reused."""
    chunks, weights = [], _weights_digest(model) if cache_dir is not None else ""
    progress = tqdm(total=len(samples), desc="fault features", unit="img")
    for start in range(0, len(samples), chunk_size):
        chunk = samples[start:start + chunk_size]
        cache_file = None if cache_dir is None else \
            Path(cache_dir) / f"faults-{_chunk_key(weights, chunk, dtype)}.npy"
        if cache_file is not None and cache_file.is_file():
            chunks.append(np.load(cache_file))
            progress.update(len(chunk))
            continue
        parts = []
        for offset in range(0, len(chunk), batch_size):
            batch = chunk[offset:offset + batch_size]
            parts.append(fault_features(model, processor, [render_sample(s) for s in batch], dtype=dtype).numpy())
            progress.update(len(batch))
        chunks.append(np.concatenate(parts))
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = cache_file.with_suffix(".tmp.npy")
            np.save(temporary, chunks[-1])
            os.replace(temporary, cache_file)
    progress.close()
    return np.concatenate(chunks)


def _family_accuracy(head: FaultHead, features: np.ndarray, targets: np.ndarray, families: np.ndarray) -> float:
    head.eval()
    with torch.no_grad():
        predicted = head(torch.from_numpy(features)).argmax(1).numpy()
    return float((families[predicted] == families[targets]).mean())


def _balanced_accuracy(head: FaultHead, features: np.ndarray, targets: np.ndarray, levels: np.ndarray,
                       families: np.ndarray, none_class: int, none_offset: float) -> dict[str, float]:
    """With `none_offset` added to the "none" logit: the "none" rate on undistorted samples, the family accuracy
    (most probable family, its classes' probabilities summed) at levels 3-5, and their mean."""
    with torch.no_grad():
        logits = head(torch.from_numpy(features))
        logits[:, none_class] += none_offset
        probabilities = logits.softmax(-1).numpy()
    names = list(dict.fromkeys(families))
    family_probabilities = np.stack([probabilities[:, families == name].sum(1) for name in names], axis=1)
    correct = np.array(names)[family_probabilities.argmax(1)] == families[targets]
    # a part without such samples (tiny runs) counts as 0: the offset then follows the other part alone
    none_rate, severe = (float(correct[part].mean()) if part.any() else 0.0 for part in (levels == 0, levels >= 3))
    return {"none_rate": round(none_rate, 4), "levels_3_to_5": round(severe, 4),
            "balanced": round((none_rate + severe) / 2, 4)}


def train_fault_head(features: np.ndarray, targets: np.ndarray, num_classes: int, recipe: FaultRecipe, epochs: int,
                     *, validation: tuple[np.ndarray, np.ndarray] | None = None,
                     families: np.ndarray | None = None) -> tuple[FaultHead, list[float]]:
    """Train a `FaultHead` on features (N, D) for class numbers (N,) with class-balanced cross-entropy. Returns
    the head and, with `validation` (and the class `families`), its family top-1 accuracy there after each epoch."""
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    head = FaultHead(features.shape[1], num_classes, recipe.hidden_size)
    for layer in head.modules():
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=0.01)
            torch.nn.init.zeros_(layer.bias)
    head.feature_mean.copy_(torch.from_numpy(features.mean(0)))
    head.feature_std.copy_(torch.from_numpy(features.std(0) + 1e-6))
    x, y = torch.from_numpy(features), torch.from_numpy(targets).long()
    counts = torch.bincount(y, minlength=num_classes).float()
    weights = torch.where(counts > 0, len(y) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    after_epoch = None if validation is None else lambda head: _family_accuracy(head, *validation, families)
    history = fit_on_features(head, x, y, lambda logits, target: F.cross_entropy(logits, target, weight=weights),
                              epochs=epochs, batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
                              weight_decay=recipe.weight_decay, generator=generator, after_epoch=after_epoch)
    head.eval()
    return head, history


def _stored_in_half_precision(checkpoint: str | os.PathLike) -> bool:
    weights = Path(checkpoint) / "model.safetensors"
    if not weights.is_file():
        return False
    with safe_open(weights, "pt") as stored:
        return any(stored.get_slice(key).get_dtype() == "F16" for key in stored.keys())


def _content_images(content, data_dir, mos_range, recipe: FaultRecipe) -> tuple[list[str], list[bool], str]:
    """The image files of a dataset's train and validation splits (never test) and which count as "none"."""
    from ..data import image_column, load_dataset_source

    source = load_dataset_source(content, data_dir, mos_range=mos_range, validation_fraction=0.0)
    low, high = source.mos_range
    files, good = [], []
    for split in ("train", "validation"):
        if split not in source.dataset:
            continue
        for item, mos in zip(image_column(source.dataset[split]), source.dataset[split]["mos"][:]):
            path = item.get("path") if isinstance(item, dict) else str(item)
            if isinstance(item, dict) and item.get("bytes") or not path:
                raise ValueError(f"{source.describe()}: its images are embedded in the dataset; the fault head "
                                 "is trained from image files: give their folder with --pristine-dir instead")
            files.append(path)
            good.append((mos - low) / (high - low) >= recipe.none_min_quality)
    return files, good, source.describe()


def train_faults(
    checkpoint: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    *,
    pristine: Sequence[str | os.PathLike],
    content: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    mos_range: Sequence[float] | None = None,
    recipe: FaultRecipe | None = None,
    feature_cache: str | os.PathLike | None = None,
    feature_dtype: str | torch.dtype = "auto",
    device: str | None = "auto",
    training_command: str | None = None,
) -> dict:
    """Give `checkpoint` (None: the bundled default model) a fault head trained on synthetic distortions of the
    `pristine` photos (folders or files; every `recipe.holdout_every`-th is held out and never read) and of
    `content`'s training images (a dataset as `metaqap train` takes it; its test split is never read), and write the
    checkpoint with the head to `output_dir` (everything else copied unchanged; weights stored in half precision
    again when they were, as `metaqap_hf.weights.store_in_half_precision` writes them) with ``fault_report.json``.
    Returns the report."""
    recipe = recipe or FaultRecipe()
    checkpoint = DEFAULT_MODEL_PATH if checkpoint is None else checkpoint
    started = time.time()
    pristine_train, pristine_held_out = split_pristine(pristine, recipe.holdout_every)
    content_files, content_none, content_description = ([], [], None)
    if content is not None:
        content_files, content_none, content_description = _content_images(content, data_dir, mos_range, recipe)
    samples = fault_samples(pristine_train, content_files, content_none, recipe)

    model = MetaQAPModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    half_precision = _stored_in_half_precision(checkpoint)  # asked before output_dir (perhaps the same) is written
    processor = MetaQAPImageProcessor.from_pretrained(checkpoint)
    device = resolve_device(device)
    feature_dtype = resolve_dtype(feature_dtype, device)  # "auto": bfloat16 only where the hardware has it
    model.to(device)
    features = extract_sample_features(model, processor, samples, dtype=feature_dtype,
                                       cache_dir=feature_cache)
    model.to("cpu")

    spec = fault_head_spec(recipe.hidden_size)
    class_of = {kind: index for index, kind in enumerate(spec["types"])}
    families = np.array(spec["families"])
    targets = np.array([class_of[sample.kind] for sample in samples])
    is_validation = np.array([sample.group % recipe.validation_every == 0 for sample in samples])
    _, history = train_fault_head(features[~is_validation], targets[~is_validation], len(spec["types"]), recipe,
                                  recipe.max_epochs, validation=(features[is_validation], targets[is_validation]),
                                  families=families)
    epochs = int(np.argmax(history)) + 1
    head, _ = train_fault_head(features[~is_validation], targets[~is_validation], len(spec["types"]), recipe, epochs)
    levels = np.array([sample.level for sample in samples])
    offsets = {offset: _balanced_accuracy(head, features[is_validation], targets[is_validation],
                                          levels[is_validation], families, class_of[NO_FAULT], offset)
               for offset in recipe.none_offsets}
    none_offset = max(offsets, key=lambda offset: offsets[offset]["balanced"])
    head, _ = train_fault_head(features, targets, len(spec["types"]), recipe, epochs)
    with torch.no_grad():
        head.mlp.bias[class_of[NO_FAULT]] += none_offset

    config = model.config
    config.fault_head = spec
    with_head = MetaQAPModel(config)
    with_head.load_state_dict({**model.state_dict(), **{f"fault_head.{k}": v for k, v in head.state_dict().items()}})
    output_dir = Path(output_dir)
    if Path(checkpoint).is_dir() and Path(checkpoint).resolve() != output_dir.resolve():
        shutil.copytree(checkpoint, output_dir, dirs_exist_ok=True)
    with_head.save_pretrained(output_dir)
    if half_precision:  # as the bundled checkpoint: stored the same way again
        store_in_half_precision(output_dir)
    processor.save_pretrained(output_dir)

    per_class = np.bincount(targets, minlength=len(spec["types"]))
    report = {
        "checkpoint": str(checkpoint),
        "training_command": training_command or command_line(),
        "recipe": asdict(recipe),
        "feature_dtype": str(feature_dtype).removeprefix("torch."),
        "pristine": {"training_photos": len(pristine_train), "held_out_photos": len(pristine_held_out),
                     "held_out": pristine_held_out},
        "content": {"dataset": content_description, "images": len(content_files),
                    "none_images": int(sum(content_none))},
        "samples": len(samples),
        "samples_per_class": {kind: int(n) for kind, n in zip(spec["types"], per_class)},
        "epochs": epochs,
        "validation_family_accuracy_by_epoch": [round(v, 4) for v in history],
        "none_offset": none_offset,
        "validation_by_none_offset": {str(offset): result for offset, result in offsets.items()},
        "validation_note": f"samples of every {recipe.validation_every}th source image (all levels), used to choose "
                           "the epochs; the head was then refit on every sample",
        "wall_time_s": round(time.time() - started, 1),
    }
    (output_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
