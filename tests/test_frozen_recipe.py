"""The default model's recipe end to end on the BIQ2021 sample, with tiny random backbones (the real backbones'
accuracy is measured by benchmarks/accuracy.py, not here)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from metaqap_hf import MetaQAPModel
from metaqap_hf.metrics import srocc
from metaqap_hf.data import load_biq2021
from metaqap_hf.training import FrozenRecipe, train_frozen, train_head
from metaqap_hf.training.stacking import stack_checkpoints

SAMPLE = Path(os.environ.get("METAQAP_BIQ2021_SAMPLE", "/work/shared/data/biq2021-sample"))
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"BIQ2021 sample not found at {SAMPLE} "
                                                                 "(set METAQAP_BIQ2021_SAMPLE)")
TINY = [{"name": "test_efficientnet", "image_size": 64}, {"name": "test_resnet", "image_size": 64}]


def test_train_head_learns_a_known_relation():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, 20)).astype(np.float32) * rng.uniform(0.1, 10, 20).astype(np.float32)
    targets = 1 / (1 + np.exp(-features[:, 0] / 5 + features[:, 1] / 3))
    recipe = FrozenRecipe(hidden_size=32, dropout=0.0, max_epochs=30)
    head, history = train_head(features[:500], targets[:500], recipe, 30, seed=0,
                               validation=(features[500:], targets[500:]))
    assert max(history) > 0.9 and len(history) == 30
    head.eval()
    with torch.no_grad():
        predictions = head(torch.from_numpy(features[500:])).numpy()
    assert srocc(predictions, targets[500:]) == pytest.approx(history[-1], abs=1e-6)


@needs_sample
def test_frozen_ensemble_end_to_end_then_score_and_stack(tmp_path):
    recipe = FrozenRecipe(hidden_size=16, max_epochs=4, folds=3)
    report = train_frozen(load_biq2021(SAMPLE, validation_fraction=0.1, seed=0), tmp_path / "model",
                          mos_range=(0.0, 1.0), backbones=TINY, recipe=recipe, feature_cache=tmp_path / "features",
                          pretrained=False)
    written = json.loads((tmp_path / "model" / "training_report.json").read_text())
    assert written["meta_learner"]["chosen"] == "stepwise"
    assert set(written["backbones"]) == {"test_efficientnet", "test_resnet"}
    assert len(list((tmp_path / "features").glob("*.npy"))) == 6  # 2 backbones x train/validation/test

    # the saved model carries the meta-learner the recipe chose, in its config
    model = MetaQAPModel.from_pretrained(tmp_path / "model").eval()
    chosen = written["meta_learner"]["fits"]["stepwise"]
    assert model.config.meta_learner["coefficients"] == pytest.approx(chosen["coefficients"])
    assert report["test_from_cached_features"]["meta_learner"]["n"] == 120

    # stacking two checkpoints: the same heads looking at the images at another resolution make a second model
    model.config.backbones = [{**spec, "image_size": 96} for spec in model.config.backbones]
    model.save_pretrained(tmp_path / "model96")
    fit = stack_checkpoints([tmp_path / "model", tmp_path / "model96"], "biq2021", SAMPLE, tmp_path / "stacked",
                            method="nnls")
    stacked = MetaQAPModel.from_pretrained(tmp_path / "stacked").eval()
    assert stacked.config.backbone_ids == ["test_efficientnet@64", "test_resnet@64",
                                           "test_efficientnet@96", "test_resnet@96"]
    assert stacked.config.meta_learner["method"] == "nnls"
    assert stacked.config.meta_learner["coefficients"] == pytest.approx(fit.coefficients)
    assert min(fit.coefficients) >= 0
    pixels = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(stacked(pixels).base_scores[:, :2],
                                   MetaQAPModel.from_pretrained(tmp_path / "model").eval()(pixels).base_scores)
        torch.testing.assert_close(stacked(pixels).base_scores[:, 2:],
                                   MetaQAPModel.from_pretrained(tmp_path / "model96").eval()(pixels).base_scores)


def test_feature_cache_is_keyed_by_the_backbone_weights(tmp_path):
    from _images import random_photo

    from metaqap_hf import MetaQAPConfig, MetaQAPImageProcessor
    from metaqap_hf.training import extract_features

    paths = []
    for seed in range(3):
        paths.append(str(tmp_path / f"photo{seed}.png"))
        random_photo(seed).save(paths[-1])
    config = MetaQAPConfig(backbones=[TINY[0]])
    processor = MetaQAPImageProcessor()
    torch.manual_seed(0)
    first = extract_features(MetaQAPModel(config).eval(), processor, paths, 0, cache_dir=tmp_path / "cache")
    torch.manual_seed(1)
    second = extract_features(MetaQAPModel(config).eval(), processor, paths, 0, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    assert not np.allclose(first, second)
    torch.manual_seed(0)
    again = extract_features(MetaQAPModel(config).eval(), processor, paths, 0, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again, first)  # same weights: read back from the cache
