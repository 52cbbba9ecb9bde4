"""examples/score_with_ray.py on a local Ray instance gives the scores `ImageScorer` gives (optional: needs
`pip install 'ray[data]'`, skipped without it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metaqap_hf.scoring import ImageScorer

from _scoring import cli_environment, save_tiny_checkpoint, write_photos

pytest.importorskip("ray.data")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "score_with_ray.py"


@pytest.mark.slow
def test_ray_data_map_batches_scores_like_the_library(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    photos = write_photos(tmp_path / "photos", 6)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    output = tmp_path / "scores.jsonl"
    result = subprocess.run([sys.executable, str(EXAMPLE), str(photos), "--output", str(output), "--model",
                             str(checkpoint), "--actors", "1", "--num-cpus", "2", "--batch-size", "4",
                             "--device", "cpu"],
                            env=cli_environment(RAY_USAGE_STATS_ENABLED="0"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"scored": 6, "skipped": 1}
    rows = {Path(row["path"]).name: row for row in map(json.loads, output.read_text().splitlines())}
    assert "not an image file" in rows["broken.jpg"]["skipped"]
    expected = {Path(item.path).name: item.score for item in ImageScorer(checkpoint, device="cpu").score_files(
        [photos]) if item.ok}
    assert {name: row["score"] for name, row in rows.items() if not row["skipped"]} == pytest.approx(expected,
                                                                                                   abs=1e-5)


@pytest.mark.slow
def test_a_plan_ray_cannot_schedule_is_refused_not_waited_on(tmp_path):
    photos = write_photos(tmp_path / "photos", 2)
    result = subprocess.run([sys.executable, str(EXAMPLE), str(photos), "--output", str(tmp_path / "scores.jsonl"),
                             "--actors", "2", "--num-cpus", "2"],
                            env=cli_environment(RAY_USAGE_STATS_ENABLED="0"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1
    assert "error: 2 actors x 1 CPUs plus one CPU to read the files need 3 CPUs; Ray has 2" in result.stderr
    assert not (tmp_path / "scores.jsonl").exists()
