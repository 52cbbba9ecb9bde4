"""Training in two CPU processes: `accelerate launch --multi_gpu --num_processes 2` (the documented CPU form) starts
two processes that join one gloo group, take every other batch of the same shuffled order, and end where one
process with the same global batch (batch 4 x 2 accumulation steps) ends. The two-process run stops at step 3,
mid-epoch, and a second run in the same two processes resumes from its checkpoint to step 6.

This file is also the worker script: `accelerate launch ... tests/test_training_distributed.py IMAGE_DIR OUTPUT_DIR`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _training import reset_accelerate_state, tiny_model, tiny_processor, write_labelled_images  # noqa: F401
from safetensors.torch import load_file

from metaqap_hf.training import (
    AccelerateTrainingArguments,
    QualityAugmentation,
    QualityImageDataset,
    build_image_cache,
    train_with_accelerate,
)

TRAIN_IMAGES, VALIDATION_IMAGES, BATCH = 16, 8, 4
STOP_AT, STEPS = 3, 6  # 16 images / (4 x 2) = 2 steps per epoch: step 3 is the middle of the second epoch
# Gradients are averaged across processes in another order than they are accumulated in one, so they differ by
# float32 rounding (~1e-7 relative). Adam divides each gradient by its own running magnitude, so that rounding
# reaches the weights at the scale of the learning rate, not of the weights: 2e-7 on a BatchNorm bias whose
# gradient is near zero has been seen on an AVX2-only CPU, where other kernels sum in another order. A wrong rank
# split or a missing all-reduce changes the gradients themselves and moves weights by a good part of one step
# (learning rate 1e-3, 6 steps), so the bound is 1% of one step: 100x what rounding gave, 100x under a real fault.
LEARNING_RATE = 1e-3
TOLERANCE = {"rtol": 1e-5, "atol": LEARNING_RATE / 100}


class RecordingDataset(QualityImageDataset):
    """Records (epoch, index) of every training sample it gives out, in order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[list[int]] = []

    def __getitem__(self, index):
        self.seen.append([self.epoch, int(index)])
        return super().__getitem__(index)


def _run(image_dir: Path, output_dir: Path, max_steps: int, accumulation: int) -> tuple[object, list[list[int]]]:
    """One training run (the same in one process and in two); returns its result and the samples it trained on."""
    paths = sorted(str(path) for path in image_dir.glob("*.png"))
    labels = json.loads((image_dir / "labels.json").read_text())
    images = build_image_cache(paths, tiny_processor())
    train = RecordingDataset(images[:TRAIN_IMAGES], labels[:TRAIN_IMAGES],
                             augmentation=QualityAugmentation(max_translation=4), seed=5)
    validation = QualityImageDataset(images[TRAIN_IMAGES:], labels[TRAIN_IMAGES:])
    arguments = AccelerateTrainingArguments(
        output_dir=str(output_dir), seed=3, num_epochs=3, max_steps=max_steps, per_device_batch_size=BATCH,
        gradient_accumulation_steps=accumulation, mixed_precision="no", lr_scheduler="constant",
        learning_rate=LEARNING_RATE, save_every_steps=1, keep_checkpoints=10, early_stopping_patience=None,
        progress_bar=False, tensorboard=False)
    model = tiny_model(head_hidden_size=8, head_dropout=0.3)  # dropout: seeded by the global micro-batch number
    result = train_with_accelerate(model, train, validation, arguments, image_processor=tiny_processor())
    return result, train.seen


def _worker(image_dir: str, output_dir: str) -> None:
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    for phase, max_steps in (("first", STOP_AT), ("resumed", STEPS)):
        result, seen = _run(Path(image_dir), Path(output_dir), max_steps, accumulation=1)
        group = {"rank": rank, "process_index": torch.distributed.get_rank(), "world_size": dist.get_world_size(),
                 "backend": dist.get_backend(), "num_processes": result.num_processes,
                 "resumed_from": result.resumed_from, "global_step": result.global_step, "seen": seen}
        (Path(output_dir) / f"{phase}-rank{rank}.json").write_text(json.dumps(group))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _parameters(folder: Path) -> dict[str, torch.Tensor]:
    """The model's trained parameters (BatchNorm running statistics aside: DDP keeps rank 0's, one process all)."""
    names = {name for name, _ in tiny_model(head_hidden_size=8, head_dropout=0.3).named_parameters()}
    return {name: value for name, value in load_file(folder / "model.safetensors").items() if name in names}


def _batches(seen: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(epoch, indices) of each batch, in the order they were read."""
    return [(seen[start][0], [index for _, index in seen[start:start + BATCH]]) for start in range(0, len(seen), BATCH)]


@pytest.mark.slow
@pytest.mark.usefixtures("reset_accelerate_state")
def test_two_cpu_processes_split_the_batches_and_match_one_process(tmp_path):
    image_dir = tmp_path / "images"
    _, labels = write_labelled_images(image_dir, TRAIN_IMAGES + VALIDATION_IMAGES)
    (image_dir / "labels.json").write_text(json.dumps(labels))
    two = tmp_path / "two-processes"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    environment.pop("WORLD_SIZE", None)
    launch = subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()), str(Path(__file__).resolve()), str(image_dir), str(two)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # Meanwhile, the reference: one process, batch 4 with 2 accumulation steps (the same global batch of 8).
    one_result, one_seen = _run(image_dir, tmp_path / "one-process", STEPS, accumulation=2)
    output, _ = launch.communicate(timeout=300)
    assert launch.returncode == 0, output[-4000:]

    ranks = [json.loads((two / f"{phase}-rank{rank}.json").read_text()) for phase in ("first", "resumed")
             for rank in (0, 1)]
    for record in ranks:  # one group of two, over gloo, seen alike by torch.distributed and by the loop
        assert (record["world_size"], record["backend"], record["num_processes"]) == (2, "gloo", 2)
        assert record["process_index"] == record["rank"]
    first0, first1, resumed0, resumed1 = ranks
    assert (first0["global_step"], first0["resumed_from"]) == (STOP_AT, None)
    assert resumed0["global_step"] == STEPS and resumed0["resumed_from"].endswith(f"checkpoint-{STOP_AT:08d}")
    assert one_result.num_processes == 1 and one_result.global_step == STEPS

    # The rank split: each epoch, rank r trains on batches r, r + 2, ... of the shuffled order one process goes
    # through, so the two ranks share every image once; the first run's 3 steps are each rank's first 3 batches
    # (its loader reads one batch ahead, so a 4th was read but not trained), and the resumed run takes up from the
    # 4th. One process reads its micro-batches in that order too: two per step.
    one_batches = _batches(one_seen)
    for epoch in range(3):
        shared = [index for rank_batches in (one_batches[epoch * 4 + rank::2] for rank in (0, 1))
                  for _, batch in rank_batches[:2] for index in batch]
        assert sorted(shared) == list(range(TRAIN_IMAGES))
    for rank, (first, resumed) in enumerate(((first0, resumed0), (first1, resumed1))):
        expected = one_batches[rank::2]  # (epoch, indices) of this rank's 6 batches, one per optimizer step
        assert len(expected) == STEPS
        assert _batches(first["seen"])[:STOP_AT] == expected[:STOP_AT] and len(_batches(first["seen"])) <= STOP_AT + 1
        assert _batches(resumed["seen"]) == expected[STOP_AT:], rank

    # The weights: the two-process run stopped at step 3, and resumed to step 6, match one process at those steps.
    for two_folder, one_folder in ((two / "checkpoints" / f"checkpoint-{STOP_AT:08d}",
                                    tmp_path / "one-process" / "checkpoints" / f"checkpoint-{STOP_AT:08d}"),
                                   (two / "final", tmp_path / "one-process" / "final")):
        reference = _parameters(one_folder)
        untrained = {name: value for name, value in tiny_model(head_hidden_size=8, head_dropout=0.3).state_dict()
                     .items() if name in reference}
        for name, value in _parameters(two_folder).items():
            assert not torch.equal(value, untrained[name]), name  # it trained
            torch.testing.assert_close(value, reference[name], **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")
    card = (two / "final" / "README.md").read_text()
    assert "6 optimizer steps (3 epochs) in 2 processes" in card


if __name__ == "__main__":  # the worker; its folder (tests/) is on sys.path, so `_training` imports
    _worker(sys.argv[1], sys.argv[2])
