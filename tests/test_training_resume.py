"""A training run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends.

The run (bf16, gradient accumulation, augmentation, dropout, mid-epoch evaluations) happens in a subprocess: this
file is also the worker script (`python tests/test_training_resume.py IMAGE_DIR OUTPUT_DIR SECONDS_PER_IMAGE`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _training import tiny_model, tiny_processor, write_labelled_images
from safetensors.torch import load_file

from metaqap_hf.training import (
    AccelerateTrainingArguments,
    QualityAugmentation,
    QualityImageDataset,
    build_image_cache,
    train_with_accelerate,
)

TRAIN_IMAGES, VALIDATION_IMAGES = 32, 8
# 32 images / batch 4 = 8 micro-batches = 4 optimizer steps per epoch (accumulation 2); 3 epochs = 12 steps.
KILL_AFTER_CHECKPOINT = 6  # mid-way through the second epoch


def _run_worker(image_dir: str, output_dir: str, seconds_per_image: float) -> None:
    class SlowDataset(QualityImageDataset):
        """Slows loading down so that the parent process can kill the run while it trains."""

        def __getitem__(self, index):
            time.sleep(seconds_per_image)
            return super().__getitem__(index)

    paths = sorted(str(path) for path in Path(image_dir).glob("*.png"))
    labels = json.loads((Path(image_dir) / "labels.json").read_text())
    images = build_image_cache(paths, tiny_processor())
    train = SlowDataset(images[:TRAIN_IMAGES], labels[:TRAIN_IMAGES],
                        augmentation=QualityAugmentation(max_translation=4), seed=7)
    validation = QualityImageDataset(images[TRAIN_IMAGES:], labels[TRAIN_IMAGES:])
    model = tiny_model(head_hidden_size=8, head_dropout=0.3)
    train_with_accelerate(model, train, validation, AccelerateTrainingArguments(
        output_dir=output_dir, seed=11, num_epochs=3, per_device_batch_size=4, gradient_accumulation_steps=2,
        mixed_precision="bf16", eval_every_steps=3, save_every_steps=2, keep_checkpoints=2, log_every_steps=1,
        progress_bar=False, tensorboard=False,
    ), image_processor=tiny_processor())


def _start(image_dir: Path, output_dir: Path, seconds_per_image: float) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(image_dir), str(output_dir), str(seconds_per_image)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(tmp_path):
    image_dir = tmp_path / "images"
    _, labels = write_labelled_images(image_dir, TRAIN_IMAGES + VALIDATION_IMAGES)
    (image_dir / "labels.json").write_text(json.dumps(labels))
    reference_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"

    reference = _start(image_dir, reference_dir, 0.0)
    victim = _start(image_dir, killed_dir, 0.03)
    marker = killed_dir / "checkpoints" / f"checkpoint-{KILL_AFTER_CHECKPOINT:08d}"
    deadline = time.monotonic() + 240
    while not marker.is_dir():
        assert victim.poll() is None, "the run ended before it could be killed:\n" + victim.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "final").exists()
    checkpoints = sorted(path.name for path in (killed_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints[-1] == marker.name, f"killed too late: {checkpoints}"
    progress = torch.load(marker / "custom_checkpoint_1.pkl", weights_only=False)
    assert (progress["epoch"], progress["batches_done"]) == (1, 4), progress  # mid-epoch, mid-run

    resumed = _start(image_dir, killed_dir, 0.0)
    _finish(resumed)
    _finish(reference)

    result = json.loads((killed_dir / "training_result.json").read_text())
    assert result["resumed_from"].endswith(marker.name)
    expected = json.loads((reference_dir / "training_result.json").read_text())
    assert expected["resumed_from"] is None and expected["global_step"] == 12
    for key in ("global_step", "epochs", "final_metrics", "best_metric", "best_step"):
        assert result[key] == expected[key], key

    for folder in ("final", "best"):
        weights, reference_weights = (load_file(run / folder / "model.safetensors")
                                      for run in (killed_dir, reference_dir))
        assert weights.keys() == reference_weights.keys()
        for name, value in reference_weights.items():
            assert torch.equal(weights[name], value), f"{folder}: {name}"
    assert (killed_dir / "metrics.jsonl").read_text() == (reference_dir / "metrics.jsonl").read_text()


if __name__ == "__main__":  # the worker; its folder (tests/) is on sys.path, so `_training` imports
    _run_worker(sys.argv[1], sys.argv[2], float(sys.argv[3]))
