"""The default model's recipe end to end on a prepared folder (images embedded in parquet, no file on disk), with
tiny random backbones (the real backbones' accuracy is measured by benchmarks/accuracy.py, not here); stacking."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _datasets import write_biq2021_layout, write_own_dataset

from metaqap_hf import MetaQAPModel
from metaqap_hf.data import prepare_dataset
from metaqap_hf.cards import lint_card, read_model_card_facts
from metaqap_hf.metrics import srocc
from metaqap_hf.training import FrozenRecipe, train_frozen, train_head
from metaqap_hf.training.stacking import stack_checkpoints

TINY = [{"name": "test_efficientnet", "image_size": 64}, {"name": "test_resnet", "image_size": 64}]


@pytest.fixture(scope="module")
def prepared_biq2021(tmp_path_factory) -> Path:
    """BIQ2021's layout with 40 train and 12 test images, prepared as parquet; the image files are then deleted."""
    root = tmp_path_factory.mktemp("frozen")
    biq = write_biq2021_layout(root / "biq", train=40, test=12, size=48)
    prepared = prepare_dataset("biq2021", biq, root / "prepared", validation_fraction=0.2)
    shutil.rmtree(biq)
    return prepared


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


def test_frozen_ensemble_on_embedded_images_then_score_and_stack(tmp_path, prepared_biq2021):
    recipe = FrozenRecipe(hidden_size=16, max_epochs=4, folds=3)
    report = train_frozen(prepared_biq2021, tmp_path / "model", backbones=TINY, recipe=recipe,
                          feature_cache=tmp_path / "features", pretrained=False)
    written = json.loads((tmp_path / "model" / "training_report.json").read_text())
    assert written["meta_learner"]["chosen"] == "stepwise"
    assert set(written["backbones"]) == {"test_efficientnet", "test_resnet"}
    assert len(list((tmp_path / "features").glob("*.npy"))) == 6  # 2 backbones x train/validation/test

    # the saved model carries the meta-learner the recipe chose, in its config, and the dataset's scale
    model = MetaQAPModel.from_pretrained(tmp_path / "model").eval()
    chosen = written["meta_learner"]["fits"]["stepwise"]
    assert model.config.meta_learner["coefficients"] == pytest.approx(chosen["coefficients"])
    assert (model.config.mos_range, model.config.mos_name) == ([0.0, 1.0], "BIQ2021 MOS (0-1)")
    test = report["test_from_cached_features"]["meta_learner"]
    assert test["n"] == 12

    # its card: lint-clean, with the figures the run measured
    assert lint_card(tmp_path / "model" / "README.md") == []
    rows = {row.split: row for row in read_model_card_facts(tmp_path / "model").evaluations}
    assert set(rows) == {"test", "train+validation, 3-fold out-of-fold"}
    assert (rows["test"].srocc, rows["test"].num_images) == (pytest.approx(test["srocc"]), 12)
    assert rows["train+validation, 3-fold out-of-fold"].num_images == 40

    # stacking two checkpoints: the same heads looking at the images at another resolution make a second model
    model.config.backbones = [{**spec, "image_size": 96} for spec in model.config.backbones]
    model.save_pretrained(tmp_path / "model96")
    fit = stack_checkpoints([tmp_path / "model", tmp_path / "model96"], prepared_biq2021, tmp_path / "stacked",
                            method="nnls")
    stacked = MetaQAPModel.from_pretrained(tmp_path / "stacked").eval()
    assert stacked.config.backbone_ids == ["test_efficientnet@64", "test_resnet@64",
                                           "test_efficientnet@96", "test_resnet@96"]
    assert stacked.config.meta_learner["method"] == "nnls"
    assert stacked.config.meta_learner["coefficients"] == pytest.approx(fit.coefficients)
    assert min(fit.coefficients) >= 0
    assert lint_card(tmp_path / "stacked" / "README.md") == []
    (row,) = read_model_card_facts(tmp_path / "stacked").evaluations
    assert (row.split, row.num_images) == ("validation", 8)  # the prepared folder's own validation split
    pixels = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(stacked(pixels).base_scores[:, :2],
                                   MetaQAPModel.from_pretrained(tmp_path / "model").eval()(pixels).base_scores)
        torch.testing.assert_close(stacked(pixels).base_scores[:, 2:],
                                   MetaQAPModel.from_pretrained(tmp_path / "model96").eval()(pixels).base_scores)

    with pytest.raises(ValueError, match=r"score on BIQ2021 MOS \(0-1\), but scores is on 1-5"):
        stack_checkpoints([tmp_path / "model"], write_own_dataset(tmp_path / "mine", count=6), tmp_path / "x",
                          mos_range=(1, 5))


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

    embedded = [{"path": Path(path).name, "bytes": Path(path).read_bytes()} for path in paths]  # as in parquet
    torch.manual_seed(0)
    from_bytes = extract_features(MetaQAPModel(config).eval(), processor, embedded, 0, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(from_bytes, first)  # the same pixels, decoded from memory
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3  # keyed by the bytes, not by a (missing) path
