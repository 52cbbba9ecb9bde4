"""`benchmarks/score_throughput.py --device ...`, the batched accelerator path (batched `decode_jpeg`, decoding
processes for other formats, pinned memory, large batches), run here on the CPU with timm's tiny model: the same
code a GPU runs, with its decode step on the CPU. Its scores must be the library's (same decoder on the CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _scoring import cli_environment

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "score_throughput.py"


def test_the_device_part_runs_on_the_cpu_and_scores_as_the_library(tmp_path):
    output = tmp_path / "throughput.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--device", "cpu", "--model", "tiny", "--dtype", "float32",
         "--device-images", "11", "--device-other", "3", "--device-batch-size", "4", "--device-workers", "1",
         "--model-batches", "2", "--output", str(output)],
        env=cli_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert list(report) == ["machine", "device"]  # --device alone runs the device part only
    [row] = report["device"]
    assert (row["device"], row["dtype"], row["files"], row["jpeg_files"]) == ("cpu", "float32", 11, 8)
    assert row["files_per_s"] > 0 and row["steady_files_per_s"] > 0 and row["model_only_img_per_s"] > 0
    assert row["library_files_per_s"] > 0
    assert row["max_abs_diff_vs_library"] < 1e-4  # every file, JPEG or PNG, scored as metaqap score does
    assert "files_per_s" in result.stdout and "model_only_img_per_s" in result.stdout
