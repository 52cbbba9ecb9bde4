"""The Accelerate training loop: bf16, gradient accumulation, outputs, early stopping, refusing to overwrite."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _training import (  # noqa: F401  (reset_accelerate_state is a fixture)
    reset_accelerate,
    reset_accelerate_state,
    tiny_model,
    tiny_processor,
    write_labelled_images,
)

from metaqap_hf import MetaQAPModel
from metaqap_hf.cards import lint_card, read_model_card_facts
from metaqap_hf.training import (
    AccelerateTrainingArguments,
    QualityAugmentation,
    QualityImageDataset,
    build_image_cache,
    train_with_accelerate,
)
from metaqap_hf.training.checkpointing import list_checkpoints
from metaqap_hf.training.loop import read_metrics_log

pytestmark = pytest.mark.usefixtures("reset_accelerate_state")


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths, labels = write_labelled_images(folder, 24)
    images = build_image_cache(paths, tiny_processor())
    return (images[:16], labels[:16]), (images[16:], labels[16:])


def _args(output_dir, **changes) -> AccelerateTrainingArguments:
    values = dict(output_dir=str(output_dir), num_epochs=2, per_device_batch_size=4, eval_batch_size=8,
                  save_every_steps=1, progress_bar=False, tensorboard=False, log_every_steps=1)
    return AccelerateTrainingArguments(**{**values, **changes})


def test_bf16_run_with_gradient_accumulation_writes_a_usable_model(tmp_path, image_sets):
    (train_images, train_labels), (val_images, val_labels) = image_sets
    train = QualityImageDataset(train_images, train_labels, augmentation=QualityAugmentation(), seed=1)
    validation = QualityImageDataset(val_images, val_labels)
    model = tiny_model()
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    conv_dtypes = set()
    model.backbones[0].conv_stem.register_forward_hook(lambda m, i, out: conv_dtypes.add(out.dtype))

    result = train_with_accelerate(model, train, validation, _args(
        tmp_path, mixed_precision="bf16", gradient_accumulation_steps=2), image_processor=tiny_processor())

    assert conv_dtypes == {torch.bfloat16}
    assert (result.global_step, result.epochs) == (4, 2.0)  # 16 images / batch 4 = 4 micro-batches = 2 steps
    assert [path.name for path in list_checkpoints(tmp_path / "checkpoints")] == [
        "checkpoint-00000003", "checkpoint-00000004"]
    records = read_metrics_log(tmp_path / "metrics.jsonl")
    evals = [record for record in records if record["kind"] == "eval"]
    assert [record["step"] for record in evals] == [2, 4]
    assert all(math.isfinite(record[key]) for record in evals
               for key in ("srocc", "plcc", "eval_loss", "srocc_test_efficientnet", "srocc_test_resnet"))
    assert [record["step"] for record in records if record["kind"] == "train"] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "training_result.json").read_text())["global_step"] == 4

    final = MetaQAPModel.from_pretrained(result.final_model_dir)
    trained = model.state_dict()
    for name, value in final.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert not torch.equal(trained["heads.0.mlp.weight"], initial["heads.0.mlp.weight"])
    assert not torch.equal(trained["backbones.1.conv1.0.weight"], initial["backbones.1.conv1.0.weight"])
    assert model.config.meta_learner == final.config.meta_learner == tiny_model().config.meta_learner
    assert (tmp_path / "best" / "preprocessor_config.json").is_file()

    # each model folder has its card, with that model's validation figures
    for folder, metrics in (("best", result.best_metrics), ("final", result.final_metrics)):
        assert lint_card(tmp_path / folder / "README.md") == []
        (row,) = read_model_card_facts(tmp_path / folder).evaluations
        assert (row.split, row.num_images, row.srocc) == ("validation", 8, pytest.approx(metrics["srocc"]))
    assert result.best_metrics["srocc"] == result.best_metric and result.num_processes == 1


def _one_sgd_step(output_dir, image_sets, batch_size, accumulation):
    (train_images, train_labels), (val_images, val_labels) = image_sets
    model = tiny_model(loss="mse")
    train_with_accelerate(
        model, QualityImageDataset(train_images, train_labels), QualityImageDataset(val_images, val_labels),
        _args(output_dir, per_device_batch_size=batch_size, gradient_accumulation_steps=accumulation,
              max_steps=1, mixed_precision="no", optimizer="sgd", learning_rate=0.1, head_learning_rate=0.1,
              lr_scheduler="constant", max_grad_norm=None, train_backbones=False))
    return _head_parameters(model)


def _head_parameters(model):
    return {name: value.detach().clone() for name, value in model.heads.named_parameters()}


def test_accumulated_micro_batches_step_like_one_large_batch(tmp_path, image_sets):
    large = _one_sgd_step(tmp_path / "large", image_sets, batch_size=8, accumulation=1)
    reset_accelerate()
    accumulated = _one_sgd_step(tmp_path / "accumulated", image_sets, batch_size=4, accumulation=2)
    untrained = _head_parameters(tiny_model(loss="mse"))
    for name, value in large.items():
        assert not torch.allclose(value, untrained[name]), name
        torch.testing.assert_close(accumulated[name], value, rtol=1e-5, atol=1e-6)


def test_early_stopping_and_an_existing_run_is_resumed_not_overwritten(tmp_path, image_sets):
    (train_images, train_labels), (val_images, val_labels) = image_sets
    datasets = QualityImageDataset(train_images, train_labels), QualityImageDataset(val_images, val_labels)
    frozen = dict(learning_rate=0.0, head_learning_rate=0.0, num_epochs=10, per_device_batch_size=8,
                  early_stopping_patience=1, mixed_precision="no", train_backbones=False)  # nothing learns
    result = train_with_accelerate(tiny_model(), *datasets, _args(tmp_path, **frozen))
    assert result.stopped_early and (result.global_step, result.best_step) == (4, 2)

    with pytest.raises(FileExistsError, match="checkpoint-00000004"):
        train_with_accelerate(tiny_model(), *datasets, _args(tmp_path, resume=False, **frozen))
    again = train_with_accelerate(tiny_model(), *datasets, _args(tmp_path, **frozen))
    assert again.resumed_from.endswith("checkpoint-00000004")
    assert (again.global_step, again.stopped_early, again.final_metrics) == (4, True, result.final_metrics)
