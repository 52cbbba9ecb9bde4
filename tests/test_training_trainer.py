"""`MetaQAPTrainer`: learns, evaluates and selects on the validation split, honours frozen parts."""

from __future__ import annotations

import pytest
import torch
from _training import reset_accelerate_state, tiny_model, tiny_processor, write_labelled_images  # noqa: F401

from metaqap_hf.training import (
    MetaQAPTrainer,
    QualityAugmentation,
    QualityImageDataset,
    build_image_cache,
    quality_training_arguments,
)

pytestmark = pytest.mark.usefixtures("reset_accelerate_state")


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    paths, labels = write_labelled_images(tmp_path_factory.mktemp("images"), 32)
    images = build_image_cache(paths, tiny_processor())
    return (images[:24], labels[:24]), (images[24:], labels[24:])


def test_trainer_learns_and_selects_on_validation_metrics(tmp_path, image_sets):
    (train_images, train_labels), (val_images, val_labels) = image_sets
    train = QualityImageDataset(train_images, train_labels, augmentation=QualityAugmentation(), seed=0)
    validation = QualityImageDataset(val_images, val_labels)
    train_as_seen = QualityImageDataset(train_images, train_labels)
    model = tiny_model(loss="mse")
    trainer = MetaQAPTrainer(model, quality_training_arguments(
        tmp_path, num_train_epochs=3, per_device_train_batch_size=4, learning_rate=3e-3, seed=0,
        load_best_model_at_end=False, disable_tqdm=True), train, validation, image_processor=tiny_processor())

    loss_before = trainer.evaluate(eval_dataset=train_as_seen)["eval_loss"]
    trainer.train()  # starts a fresh log history
    validation_runs = [entry for entry in trainer.state.log_history if "eval_srocc" in entry]
    loss_after = trainer.evaluate(eval_dataset=train_as_seen)["eval_loss"]
    assert loss_after < 0.5 * loss_before

    assert [entry["epoch"] for entry in validation_runs] == [1.0, 2.0, 3.0]
    for key in ("eval_srocc", "eval_plcc", "eval_krocc", "eval_rmse", "eval_srocc_test_efficientnet",
                "eval_srocc_test_resnet"):
        assert all(key in entry for entry in validation_runs), key
    srocc = [entry["eval_srocc"] for entry in validation_runs]
    best_epoch = srocc.index(max(srocc)) + 1
    assert trainer.state.best_metric == max(srocc)
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{6 * best_epoch}")  # 24 images / 4 a step
    assert (tmp_path / f"checkpoint-{6 * best_epoch}" / "preprocessor_config.json").is_file()
    assert train.epoch == 2  # augmentation followed the epochs
    scores = trainer.predict(validation).predictions[0]
    assert scores.shape == (len(validation),)


def test_frozen_backbones_do_not_change(tmp_path, image_sets):
    (train_images, train_labels), (val_images, val_labels) = image_sets
    model = tiny_model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    trainer = MetaQAPTrainer(model, quality_training_arguments(
        tmp_path, max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2, eval_strategy="no",
        save_strategy="no", load_best_model_at_end=False, disable_tqdm=True),
        QualityImageDataset(train_images, train_labels), QualityImageDataset(val_images, val_labels),
        train_backbones=False)
    trainer.train()
    after = model.state_dict()
    frozen = [name for name in after if name.startswith("backbones.")]
    assert any("running_mean" in name for name in frozen)  # BatchNorm statistics are checked too
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["heads.0.mlp.weight"], before["heads.0.mlp.weight"])
