"""Crash-safe checkpoint folders and the resumable metrics log."""

from __future__ import annotations

import pytest
import torch
from _training import reset_accelerate_state, tiny_model  # noqa: F401  (fixture)
from accelerate import Accelerator

from metaqap_hf.training.checkpointing import atomic_directory, latest_checkpoint, list_checkpoints, save_training_state
from metaqap_hf.training.loop import MetricsLog, read_metrics_log

pytestmark = pytest.mark.usefixtures("reset_accelerate_state")


def _prepared():
    accelerator = Accelerator()
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


class _Killed(BaseException):
    """Stands for the process dying: nothing after it runs."""


def test_a_save_interrupted_before_its_rename_is_never_picked_up(tmp_path):
    accelerator, model, _ = _prepared()
    root = tmp_path / "checkpoints"
    first = save_training_state(accelerator, root, step=1)
    saved_weights = {name: value.clone() for name, value in model.state_dict().items()}

    real_save_state = accelerator.save_state

    def save_then_die(output_dir):
        real_save_state(output_dir)  # every file written ...
        raise _Killed  # ... and the process gone before the rename

    with torch.no_grad():
        model.heads[0].mlp.bias.add_(1.0)
    accelerator.save_state = save_then_die
    with pytest.raises(_Killed):
        save_training_state(accelerator, root, step=2)
    accelerator.save_state = real_save_state
    assert (root / ".tmp-checkpoint-00000002").is_dir()
    assert latest_checkpoint(root) == first and list_checkpoints(root) == [first]

    with torch.no_grad():
        model.heads[0].mlp.bias.zero_()
    accelerator.load_state(str(latest_checkpoint(root)))
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved_weights[name]), name

    third = save_training_state(accelerator, root, step=3)
    assert sorted(path.name for path in root.iterdir()) == ["checkpoint-00000001", "checkpoint-00000003"]
    assert latest_checkpoint(root) == third


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    accelerator, _, _ = _prepared()
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6, 10):
        save_training_state(accelerator, root, step=step, keep_last=2)
    assert [path.name for path in list_checkpoints(root)] == ["checkpoint-00000006", "checkpoint-00000010"]
    assert sorted(path.name for path in root.iterdir()) == ["checkpoint-00000006", "checkpoint-00000010"]


def test_atomic_directory_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "best"

    def write(files):
        def fill(folder):
            folder.mkdir()
            for name, text in files.items():
                (folder / name).write_text(text)
        return fill

    atomic_directory(target, write({"a.txt": "old", "stale.txt": "old"}))
    atomic_directory(target, write({"a.txt": "new"}))
    assert sorted(path.name for path in target.iterdir()) == ["a.txt"]
    assert (target / "a.txt").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best"]

    def fail(folder):
        folder.mkdir()
        raise _Killed

    with pytest.raises(_Killed):
        atomic_directory(target, fail)
    assert (target / "a.txt").read_text() == "new"


def test_metrics_log_resume_drops_records_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in (1, 2, 3, 4):
        log.log({"kind": "train", "step": step, "loss": 1.0 / step})
    log.log({"kind": "eval", "step": 4, "srocc": float("nan")})
    log.close()
    with open(path, "a") as handle:
        handle.write('{"kind": "train", "st')  # a line cut off by a kill

    assert read_metrics_log(path)[-1] == {"kind": "eval", "step": 4, "srocc": None}
    resumed = MetricsLog(path, keep_until_step=2)
    resumed.log({"kind": "train", "step": 3, "loss": 0.5})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics_log(path)] == [(1, 1.0), (2, 0.5), (3, 0.5)]
    MetricsLog(path).close()  # a fresh run starts an empty log
    assert read_metrics_log(path) == []
