"""Helpers shared by the training tests: generated labelled images, tiny models, a clean Accelerate state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _images import random_photo
from PIL import Image

TRAINING_BACKBONES = [
    {"name": "test_efficientnet", "image_size": 32},
    {"name": "test_resnet", "image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
]
PROCESSED_SIZE = 48


def write_labelled_images(folder: Path, count: int, offset: int = 0) -> tuple[list[str], list[float]]:
    """`count` generated photos of varied sizes saved as PNG, and a MOS on 1-5 that follows their brightness
    (something a tiny model can learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for index in range(offset, offset + count):
        image = random_photo(index, size=(40 + index % 3 * 8, 52 - index % 2 * 8))
        array = np.asarray(image).astype(np.float32) * (0.5 + (index * 7 % 11) / 20)
        path = folder / f"image_{index:03d}.png"
        Image.fromarray(array.clip(0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
        labels.append(float(1 + 4 * array.mean() / 255))
    return paths, labels


def tiny_processor():
    from metaqap_hf import MetaQAPImageProcessor

    return MetaQAPImageProcessor(size={"height": PROCESSED_SIZE, "width": PROCESSED_SIZE})


def tiny_model(seed: int = 0, **config_kwargs):
    import torch

    from metaqap_hf import MetaQAPConfig, MetaQAPModel

    torch.manual_seed(seed)
    config_kwargs.setdefault("mos_range", [1.0, 5.0])
    return MetaQAPModel(MetaQAPConfig(backbones=TRAINING_BACKBONES, **config_kwargs))


def reset_accelerate() -> None:
    """Accelerate keeps one process-wide state (mixed precision included): start a fresh one."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def reset_accelerate_state():
    reset_accelerate()
    yield
    reset_accelerate()
