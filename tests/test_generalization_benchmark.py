"""benchmarks/generalization.py end to end on generated data with tiny models: the three tables, scores that are the
pipeline's own, and leave-one-subset-out folds that never train on the subset they test."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _datasets import write_biq2021_layout
from _images import random_photo
from _scoring import cli_environment, save_tiny_checkpoint
from transformers import pipeline

import metaqap_hf  # noqa: F401
from metaqap_hf.data import load_biq2021
from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "generalization.py"


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("generalization", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_response_reads_falling_and_flat_series():
    module = _benchmark_module()
    scores = np.zeros((2, len(DISTORTION_TYPES), NUM_LEVELS))
    scores[:, 0] = np.linspace(0.9, 0.1, NUM_LEVELS)     # falls at every level: rho -1, counted as falling
    scores[0, 1] = np.linspace(0.1, 0.9, NUM_LEVELS)     # rises in one photo: rho +1
    scores[1, 1] = [0.5, 0.4, 0.4, 0.3, 0.2]             # one tie: rho near -1, not strictly falling
    rows = module.synthetic_response(scores)             # every other type is flat: rho 0, not falling
    first, second = rows[DISTORTION_TYPES[0]], rows[DISTORTION_TYPES[1]]
    assert first == {"spearman": pytest.approx(-1.0), "falling_pct": 100.0}
    assert second["falling_pct"] == 0.0 and second["spearman"] == pytest.approx((1.0 - 0.9746794) / 2, abs=1e-6)
    assert rows[DISTORTION_TYPES[2]] == {"spearman": 0.0, "falling_pct": 0.0}
    assert rows["mean"]["falling_pct"] == pytest.approx(100 / len(DISTORTION_TYPES))


def test_three_tables_on_generated_biq2021(tmp_path):
    data = write_biq2021_layout(tmp_path / "biq", train=36, test=18, size=40, subsets=("ss01", "ss02", "ss03"))
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    random_photo(3, size=(48, 64)).save(pristine / "photo.png")
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    output = tmp_path / "generalization.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--tables", "official", "loso", "synthetic", "--model", str(checkpoint),
         "--data-dir", str(data), "--pristine-dir", str(pristine), "--photos", "1", "--backbones", "tiny",
         "--work-dir", str(tmp_path / "loso"), "--feature-cache", str(tmp_path / "features"),
         "--output", str(output)],
        env=cli_environment(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    for title in ("### BIQ2021 official test", "### Leave one subset out", "### Synthetic response (1 pristine"):
        assert title in run.stdout
    report = json.loads(output.read_text())

    official = report["official"]
    assert [official["rows"][name]["n"] for name in ("official test", "ss01", "ss02", "ss03")] == [18, 6, 6, 6]
    scorer = pipeline("image-quality", model=str(checkpoint))
    for name, score in list(official["predictions"].items())[:4]:  # blind: what a user gets for the file
        assert score == pytest.approx(scorer(str(data / "Images" / name))["score"], abs=1e-5)

    loso = report["loso"]["rows"]
    for subset in ("ss01", "ss02", "ss03"):
        fold = loso[f"{subset} held out"]
        assert fold["n"] == 6 and fold["n_train"] < 24 and -1 <= fold["srocc"] <= 1
        assert (tmp_path / "loso" / f"without-{subset}" / "model.safetensors").is_file()
    assert loso["mean"]["srocc"] == pytest.approx(np.mean([loso[f"{s} held out"]["srocc"] for s in
                                                           ("ss01", "ss02", "ss03")]))

    synthetic = report["synthetic"]
    assert synthetic["photos"] == ["photo.png"]
    assert np.asarray(synthetic["scores"]).shape == (1, len(DISTORTION_TYPES), NUM_LEVELS)
    assert set(synthetic["rows"]) == {*DISTORTION_TYPES, "mean"}


def test_loso_folds_hold_out_one_subset(tmp_path):
    module = _benchmark_module()
    data = write_biq2021_layout(tmp_path / "biq", train=30, test=12, size=24, subsets=("ss01", "ss02", "ss03"))
    arguments = type("Arguments", (), {"train_limit": 12, "seed": 0, "validation_fraction": 0.25})
    for held_out in ("ss01", "ss02", "ss03"):
        splits, test = module.loso_splits(load_biq2021(data, validation_fraction=0.0), held_out, arguments)
        training = list(splits["train"]["image_name"]) + list(splits["validation"]["image_name"])
        assert len(training) == 12 and len(set(training)) == 12
        assert not [name for name in training if name.startswith(held_out)]
        assert sorted({name[:4] for name in test["image_name"]}) == [held_out] and len(test) == 4


def test_loso_with_the_finetune_recipe_from_pretrained_backbones(tmp_path):
    """`--recipe finetune --backbones-from`: each fold fine-tunes a model whose backbones start from the given
    checkpoint, and the fold's checkpoint is the one scored."""
    data = write_biq2021_layout(tmp_path / "biq", train=36, test=9, size=40, subsets=("ss01", "ss02", "ss03"))
    start = save_tiny_checkpoint(tmp_path / "start")
    output = tmp_path / "loso.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--tables", "loso", "--recipe", "finetune", "--backbones", "tiny",
         "--backbones-from", str(start), "--image-size", "64", "--epochs", "1", "--batch-size", "4",
         "--validation-fraction", "0.25", "--data-dir", str(data), "--work-dir", str(tmp_path / "loso"),
         "--output", str(output)],
        env=cli_environment(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(output.read_text())["loso"]
    assert report["recipe"]["backbones_from"] == str(start)
    for subset in ("ss01", "ss02", "ss03"):
        fold = tmp_path / "loso" / f"without-{subset}"
        assert report["rows"][f"{subset} held out"]["n"] == 3 and (fold / "model.safetensors").is_file()
        card = (fold / "README.md").read_text()
        assert f"backbones starting from the saved model {start}" in card
