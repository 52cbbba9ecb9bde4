"""Shared fixtures: every test runs offline with a throwaway HF_HOME, and tiny timm `test_*` backbones."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


TINY_BACKBONES = [
    {"name": "test_efficientnet", "image_size": 64},
    {"name": "test_resnet", "image_size": 96, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
]


@pytest.fixture
def tiny_config():
    from metaqap_hf import MetaQAPConfig

    return MetaQAPConfig(backbones=TINY_BACKBONES, mos_range=[1.0, 5.0], mos_name="test MOS (1-5)")


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_config):
    """A saved tiny model with trained-looking (non-default) heads, plus its image processor."""
    import torch

    from metaqap_hf import MetaQAPImageProcessor, MetaQAPModel

    torch.manual_seed(0)
    model = MetaQAPModel(tiny_config).eval()
    with torch.no_grad():
        for head in model.heads:
            head.mlp.weight.normal_(std=0.05)
            head.mlp.bias.fill_(0.5)
        model.config.set_meta_learner("ridge", [0.7, 0.4], -0.05)
    path = tmp_path / "tiny-metaqap"
    model.save_pretrained(path)
    MetaQAPImageProcessor().save_pretrained(path)
    return path
