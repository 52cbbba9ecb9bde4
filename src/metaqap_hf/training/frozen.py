"""The frozen-backbone recipe that trains `metaqap-lite-biq2021` on a 2-core CPU: ImageNet backbones stay fixed,
their multi-stage pooled features are computed once, a small MLP head per backbone is trained on those features,
and the meta-learner is stacked on out-of-fold head predictions.

    images -> (frozen backbone -> pooled features, cached) -> head per backbone -> k-fold OOF predictions
           -> meta-learner fit on OOF -> heads refit on all training images -> one MetaQAPModel checkpoint

Any dataset works (`metaqap_hf.data.load_dataset_source`: a benchmark, a CSV/JSONL table, a prepared folder with
embedded images, a hub id, a `DatasetDict`). The number of head epochs is chosen on ``validation``; a ``test``
split, when present, is only predicted after every choice is made, for the report. The checkpoint is written with
its model card: the test figures when there is a test split, and the out-of-fold figures of the meta-learner.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cards import ModelCardFacts, card_evaluation, command_line, save_checkpoint
from ..data import DatasetSource, load_dataset_source
from ..data.images import DatasetImage, image_column, image_identity, load_dataset_image
from ..data.splits import VALIDATION_FRACTION
from ..devices import resolve_device, resolve_dtype
from ..factory import create_model
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..image_utils import pixel_values
from ..losses import get_loss
from ..metrics import ablation_metrics, compute_iqa_metrics, srocc
from ..modeling_metaqap import MetaQAPModel, QualityHead
from .stacking import fit_meta_learner

__all__ = ["FrozenRecipe", "extract_features", "fit_frozen_heads", "train_frozen", "train_head"]


@dataclass
class FrozenRecipe:
    """Hyper-parameters of the frozen-feature recipe (the defaults reproduce metaqap-lite-biq2021)."""

    hidden_size: int = 256
    dropout: float = 0.2
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 60
    folds: int = 5
    loss: str = "rank"
    meta_learner: str = "stepwise"
    seed: int = 0


def _predict(head: QualityHead, features: np.ndarray) -> np.ndarray:
    head.eval()
    with torch.no_grad():
        return head(torch.from_numpy(features)).numpy()


def train_head(
    features: np.ndarray,
    targets: np.ndarray,
    recipe: FrozenRecipe,
    epochs: int,
    *,
    seed: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[QualityHead, list[float]]:
    """Train one head on pooled features (N, D) for unit-scale targets (N,). Returns the head and, with
    `validation`, its SROCC there after every epoch."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = QualityHead(features.shape[1], recipe.hidden_size, recipe.dropout)
    head.feature_mean.copy_(torch.from_numpy(features.mean(0)))
    head.feature_std.copy_(torch.from_numpy(features.std(0) + 1e-6))
    head.set_output_bias(float(targets.mean()))
    x, y = torch.from_numpy(features), torch.from_numpy(targets.astype(np.float32))
    after_epoch = None if validation is None else lambda head: srocc(_predict(head, validation[0]), validation[1])
    history = fit_on_features(head, x, y, get_loss(recipe.loss), epochs=epochs, batch_size=recipe.batch_size,
                              learning_rate=recipe.learning_rate, weight_decay=recipe.weight_decay,
                              generator=generator, after_epoch=after_epoch)
    return head, history


def fit_on_features(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, *, epochs: int,
                    batch_size: int, learning_rate: float, weight_decay: float, generator: torch.Generator,
                    after_epoch=None) -> list:
    """Train `head` on cached features `x` for targets `y`: AdamW, `epochs` passes in minibatches shuffled by
    `generator`. Returns `after_epoch(head)` of every epoch (empty without it). The quality heads and the fault
    head both learn this way."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
    history = []
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss = loss_fn(head(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if after_epoch is not None:
            history.append(after_epoch(head))
    return history


def fit_frozen_heads(
    model: MetaQAPModel,
    train_features: list[np.ndarray],
    train_targets: np.ndarray,
    validation_features: list[np.ndarray],
    validation_targets: np.ndarray,
    recipe: FrozenRecipe,
) -> dict:
    """Fit every head and the meta-learner of `model` in place (targets on the unit scale). Returns a report."""
    all_targets = np.concatenate([train_targets, validation_targets])
    folds = np.random.default_rng(recipe.seed).permutation(len(all_targets)) % recipe.folds
    out_of_fold = np.zeros((len(all_targets), len(model.heads)), dtype=np.float64)
    report = {"recipe": asdict(recipe), "backbones": {}}
    for index, backbone_id in enumerate(model.config.backbone_ids):
        train_x, validation_x = train_features[index], validation_features[index]
        _, history = train_head(train_x, train_targets, recipe, recipe.max_epochs, seed=recipe.seed,
                                validation=(validation_x, validation_targets))
        epochs = int(np.argmax(history)) + 1
        all_x = np.concatenate([train_x, validation_x])
        for fold in range(recipe.folds):
            held_out = folds == fold
            head, _ = train_head(all_x[~held_out], all_targets[~held_out], recipe, epochs, seed=recipe.seed + fold)
            out_of_fold[held_out, index] = _predict(head, all_x[held_out])
        final_head, _ = train_head(all_x, all_targets, recipe, epochs, seed=recipe.seed)
        model.heads[index].load_state_dict(final_head.state_dict())
        report["backbones"][backbone_id] = {
            "epochs": epochs, "validation_srocc_by_epoch": [round(v, 4) for v in history],
            "out_of_fold_srocc": srocc(out_of_fold[:, index], all_targets),
        }
    fits = {method: fit_meta_learner(out_of_fold, all_targets, method)
            for method in ("stepwise", "ridge", "nnls", "mean")}
    chosen = fits[recipe.meta_learner]
    model.config.set_meta_learner(**chosen.as_config())
    report["meta_learner"] = {
        "chosen": recipe.meta_learner, "fitted_on": f"{recipe.folds}-fold out-of-fold predictions on train+validation",
        "steps": chosen.steps,
        "out_of_fold_srocc": {m: srocc(f.predict(out_of_fold), all_targets) for m, f in fits.items()},
        "out_of_fold": compute_iqa_metrics(chosen.predict(out_of_fold), all_targets),
        "fits": {m: f.as_config() for m, f in fits.items()},
    }
    return report


def train_frozen(
    dataset: str | os.PathLike | DatasetSource,
    output_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    mos_range: Sequence[float] | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    backbones: str | Sequence[Mapping] = "lite",
    image_size: int | None = None,
    recipe: FrozenRecipe | None = None,
    feature_cache: str | os.PathLike | None = None,
    feature_dtype: str | torch.dtype = "auto",
    pretrained: bool = True,
    weight_sources: Mapping[str, str | os.PathLike] | None = None,
    backbones_from: str | os.PathLike | None = None,
    device: str | None = None,
    training_command: str | None = None,
) -> dict:
    """Train the frozen-backbone ensemble on `dataset`, write the checkpoint (model, image processor,
    ``training_report.json`` and its model card) to `output_dir`, and return the report.

    `dataset` is anything `metaqap_hf.data.load_dataset_source` resolves (a registered benchmark with `data_dir`, a
    CSV/JSONL table with `mos_range`, a prepared folder, a hub id, a `DatasetDict` with ``train`` and optionally
    ``validation`` and ``test`` and a ``mos`` column); validation is the source's own or carved from train
    (`validation_fraction`, ``recipe.seed``). The model comes from `metaqap_hf.factory.create_model(backbones,
    image_size=...)` on the dataset's MOS scale, with ImageNet weights when `pretrained`, or the backbones of the
    saved model `backbones_from` (quality-aware pretraining's ``final/``). Features are computed on `device`
    (default: CUDA when available, `metaqap_hf.devices.resolve_device`) in `feature_dtype` (``"auto"``: bfloat16
    on GPUs and on CPUs that compute it natively, float32 elsewhere, where bfloat16 is emulated and 25-40x slower);
    heads train on the CPU, which is fast enough for pooled features.
    `training_command` is the command the card shows (default: how this process was started)."""
    recipe = recipe or FrozenRecipe()
    device = resolve_device(device)
    feature_dtype = resolve_dtype(feature_dtype, device)
    started = time.time()
    source = load_dataset_source(dataset, data_dir, mos_range=mos_range, validation_fraction=validation_fraction,
                                 seed=recipe.seed)
    splits = [split for split in ("train", "validation", "test") if split in source.dataset]
    for required in ("train", "validation"):
        if required not in splits:
            raise ValueError(f"{source.describe()}: the frozen recipe needs a {required!r} split")
    model = create_model(backbones, image_size=image_size, pretrained=pretrained, weight_sources=weight_sources,
                         backbones_from=backbones_from, seed=recipe.seed, mos_range=list(source.mos_range),
                         mos_name=source.mos_name, loss=recipe.loss, head_hidden_size=recipe.hidden_size,
                         head_dropout=recipe.dropout).eval()
    config = model.config
    model.to(device)
    processor = MetaQAPImageProcessor()
    features = {
        split: [extract_features(model, processor, image_column(source.dataset[split]), i, dtype=feature_dtype,
                                 cache_dir=feature_cache, desc=f"{backbone_id} {split}")
                for i, backbone_id in enumerate(config.backbone_ids)]
        for split in splits
    }
    targets = {split: model.to_unit_scale(torch.tensor(source.dataset[split]["mos"][:])).numpy() for split in splits}
    model.to("cpu")
    report = fit_frozen_heads(model, features["train"], targets["train"], features["validation"],
                              targets["validation"], recipe)
    report["dataset"] = source.describe()

    if "test" in splits:  # every choice is made; now, and only now, look at the test split (for the report)
        test_bases = np.column_stack([_predict(model.heads[i], f) for i, f in enumerate(features["test"])])
        test_score = model.combine(torch.from_numpy(test_bases)).numpy()
        report["test_from_cached_features"] = {
            "note": f"test split, {len(test_score)} images, features in {feature_dtype}",
            "meta_learner": compute_iqa_metrics(test_score, targets["test"]),
            **ablation_metrics(test_bases, targets["test"], config.backbone_ids),
        }
    report["wall_time_s"] = round(time.time() - started, 1)

    output_dir = Path(output_dir)
    save_checkpoint(model, processor, output_dir,
                    _card_facts(source, report, model, recipe, training_command, backbones_from), overwrite=True)
    (output_dir / "training_report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report


def _card_facts(source: DatasetSource, report: dict, model: MetaQAPModel, recipe: FrozenRecipe,
                training_command: str | None, backbones_from: str | os.PathLike | None) -> ModelCardFacts:
    """The card of a frozen-recipe checkpoint: its test figures (when there is a test split) and the meta-learner's
    out-of-fold figures on train+validation. The report's figures are on the heads' 0-1 unit scale; the card's
    RMSE is on the checkpoint's MOS scale."""
    low, high = model.config.mos_range
    measured = {"test": (report.get("test_from_cached_features") or {}).get("meta_learner"),
                f"train+validation, {recipe.folds}-fold out-of-fold": report["meta_learner"]["out_of_fold"]}
    rows = [card_evaluation({**metrics, "rmse": metrics["rmse"] * (high - low)}, dataset_name=source.name,
                            dataset_id=source.dataset_id, split=split, num_images=metrics["n"])
            for split, metrics in measured.items() if metrics is not None]
    return ModelCardFacts(
        training_dataset=source.name, training_dataset_id=source.dataset_id,
        training_command=training_command or command_line(),
        training_notes=(f"frozen {f'backbones of {backbones_from}' if backbones_from else 'ImageNet backbones'}, "
                        f"one MLP head each on their pooled features, a {recipe.meta_learner} meta-learner fitted on "
                        f"{recipe.folds}-fold out-of-fold head predictions (metaqap_hf.training.train_frozen) on "
                        f"{source.describe()}; the test figures "
                        "are computed from the cached features, after every choice was made"),
        evaluations=[row for row in rows if row is not None],
    )


# Features

def _cache_key(model: MetaQAPModel, index: int, images: Sequence[DatasetImage], dtype: torch.dtype) -> str:
    """Features depend on the backbone's spec and weights, the precision and the images (`image_identity`: a
    file's path, size and modification time, or the hash of embedded bytes)."""
    spec = model.config.backbones[index]
    identity = {"backbone": spec, "dtype": str(dtype), "images": [image_identity(image) for image in images]}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for name, tensor in model.backbones[index].state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def extract_features(
    model: MetaQAPModel,
    image_processor,
    images: Sequence[DatasetImage],
    index: int,
    *,
    batch_size: int = 16,
    dtype: str | torch.dtype = "auto",
    cache_dir: str | os.PathLike | None = None,
    desc: str | None = None,
) -> np.ndarray:
    """Features (N, D) float32 of backbone `index` for every image (file paths, or items of a datasets ``Image``
    column: `metaqap_hf.data.image_column`), decoded and processed exactly as at inference
    (`metaqap_hf.image_utils.pixel_values`), in `dtype` (``"auto"``: `metaqap_hf.devices.resolve_dtype` for the
    model's device). With `cache_dir`, a result is saved there keyed by backbone spec and weights, dtype and images,
    and reused."""
    device = next(model.parameters()).device
    dtype = resolve_dtype(dtype, device)
    cache_file = None
    if cache_dir is not None:
        name = model.config.backbone_ids[index].replace("@", "_")
        cache_file = Path(cache_dir) / f"{name}-{_cache_key(model, index, images, dtype)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    model.eval()
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc or model.config.backbone_ids[index],
                      unit="batch"):
        decoded = [load_dataset_image(image) for image in images[start:start + batch_size]]
        batch = pixel_values(decoded, image_processor).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            chunks.append(model.base_features(batch, index).float().cpu().numpy())
    features = np.concatenate(chunks)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_suffix(".tmp.npy")
        np.save(temporary, features)
        os.replace(temporary, cache_file)
    return features
