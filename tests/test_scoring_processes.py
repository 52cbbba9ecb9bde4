"""Scoring in several processes: the documented `accelerate launch` form on CPUs splits the inputs, scores each once
and merges the parts into one file in input order, with the same scores as one process; interrupted runs leave
parts that a resumed run merges."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from metaqap_hf.scoring import ScoredImage
from metaqap_hf.scoring.output import merged_rows

from _scoring import cli_environment, run_metaqap, save_tiny_checkpoint, write_photos


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_with_two_cpu_processes_scores_each_file_once(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    photos = write_photos(tmp_path / "photos", 25)
    single = run_metaqap("score", str(photos), "--model", str(checkpoint), "-o", str(tmp_path / "one.jsonl"))
    assert single.returncode == 0, single.stderr

    output = tmp_path / "two.jsonl"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()),
              "-m", "metaqap_hf", "score", str(photos), "--model", str(checkpoint), "-o", str(output), "-b", "4"]
    result = subprocess.run(launch, env=cli_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 25 files in 2 processes, 0 skipped" in result.stderr.splitlines()
    one = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["path"] for row in two] == [row["path"] for row in one]  # each once, in input order
    assert [row["score"] for row in two] == pytest.approx([row["score"] for row in one], abs=1e-5)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["one.jsonl", "photos", "tiny", "two.jsonl"]


def test_parts_appended_to_by_several_runs_merge_in_input_order(tmp_path):
    """A part file written by an interrupted run and then a resumed one holds two ascending runs of indices."""
    def row(index: int) -> str:
        return json.dumps({"index": index, "path": f"p{index}", "score": 0.5, "raw_score": 0.5, "std": 0.0,
                           "base_scores": {}}) + "\n"

    (tmp_path / "out.jsonl.part-0-of-2").write_text("".join(row(i) for i in (0, 4, 8, 2, 6)))
    (tmp_path / "out.jsonl.part-1-of-2").write_text("".join(row(i) for i in (1, 3, 5, 7)) + '{"index": 9, "pa')
    merged = list(merged_rows(sorted(tmp_path.glob("out.jsonl.part-*"))))
    assert all(isinstance(item, ScoredImage) for item in merged)
    assert [item.path for item in merged] == [f"p{i}" for i in range(9)]  # the cut-off row 9 is left out
