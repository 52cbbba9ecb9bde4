"""A training run's metrics as JSON lines (one record per logged step or evaluation), mirrored to TensorBoard
when it is installed.

Resuming keeps the log equal to an uninterrupted run's: records after the checkpoint's step (written by the
killed run after its last checkpoint) are dropped before new ones are appended.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_metrics_log"]


def read_metrics_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics log, in order (a last line cut off by a kill is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Append-only JSONL log at `path`; `keep_until_step` None starts a new log, a step resumes one.

    `tensorboard_dir` (optional) also writes every numeric value as a scalar under its key.
    """

    def __init__(self, path: str | os.PathLike, keep_until_step: int | None = None,
                 tensorboard_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_until_step is not None and self.path.is_file():
            kept = [record for record in read_metrics_log(self.path) if record.get("step", 0) <= keep_until_step]
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text("".join(json.dumps(record) + "\n" for record in kept))
        os.replace(temporary, self.path)
        self._file = open(self.path, "a")
        self._writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(tensorboard_dir))

    def log(self, record: dict[str, Any]) -> None:
        """Write one record; it must carry an integer ``step``. NaN values are written as null."""
        clean = {key: (None if isinstance(value, float) and math.isnan(value) else value)
                 for key, value in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._writer is not None:
            prefix = "eval/" if record.get("kind") == "eval" else "train/"
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(prefix + key, value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
