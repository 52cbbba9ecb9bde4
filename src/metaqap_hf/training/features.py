"""Pooled backbone features of a whole dataset split, computed once and cached: the input of the frozen-backbone
recipe (ridge heads and stacking fitted on features instead of images)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..image_processing_metaqap import load_image
from ..modeling_metaqap import MetaQAPModel

__all__ = ["image_paths", "extract_features"]


def image_paths(dataset) -> list[str]:
    """File paths of a datasets split's `image` column, without decoding the images."""
    from datasets import Image

    column = dataset.cast_column("image", Image(decode=False))["image"]
    missing = [i for i, item in enumerate(column) if not item.get("path")]
    if missing:
        raise ValueError(f"{len(missing)} rows have no image path (e.g. row {missing[0]}); features need files")
    return [item["path"] for item in column]


def _cache_key(model: MetaQAPModel, index: int, paths: list[str], dtype: torch.dtype) -> str:
    """Features depend on the backbone's spec and weights, the pooling, the precision and the images."""
    spec = model.config.backbones[index]
    identity = {"backbone": spec, "pooling": model.config.feature_pooling, "dtype": str(dtype), "paths": paths}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for name, tensor in model.backbones[index].state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def extract_features(
    model: MetaQAPModel,
    image_processor,
    paths: list[str],
    index: int,
    *,
    batch_size: int = 16,
    dtype: torch.dtype = torch.bfloat16,
    cache_dir: str | os.PathLike | None = None,
    desc: str | None = None,
) -> np.ndarray:
    """Features (N, D) float32 of backbone `index` for every image in `paths`, decoded and processed exactly as at
    inference (`load_image` + the image processor). With `cache_dir`, a result is saved there keyed by backbone
    spec and weights, pooling, dtype and image list, and reused."""
    cache_file = None
    if cache_dir is not None:
        name = model.config.backbone_ids[index].replace("@", "_")
        cache_file = Path(cache_dir) / f"{name}-{_cache_key(model, index, paths, dtype)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc or model.config.backbone_ids[index],
                      unit="batch"):
        images = [load_image(path) for path in paths[start:start + batch_size]]
        pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            chunks.append(model.base_features(pixel_values, index).float().cpu().numpy())
    features = np.concatenate(chunks)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_suffix(".tmp.npy")
        np.save(temporary, features)
        os.replace(temporary, cache_file)
    return features
