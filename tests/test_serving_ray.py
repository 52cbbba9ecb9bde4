"""examples/serve_with_ray.py on a local Ray instance answers as `ImageScorer` scores (optional: needs
`pip install 'ray[serve]'`, skipped without it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metaqap_hf.scoring import ImageScorer

from _scoring import cli_environment, save_tiny_checkpoint, write_photos

pytest.importorskip("ray.serve")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "serve_with_ray.py"


@pytest.mark.slow
def test_ray_serve_replicas_answer_like_the_library(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    photos = write_photos(tmp_path / "photos", 3)
    paths = sorted(photos.iterdir())
    result = subprocess.run([sys.executable, str(EXAMPLE), "--model", str(checkpoint), "--device", "cpu", "--dtype",
                             "float32", "--replicas", "1", "--num-cpus", "2", "--port", "18923",
                             "--check", *map(str, paths)],
                            env=cli_environment(RAY_USAGE_STATS_ENABLED="0"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    expected = {item.path: item.score for item in ImageScorer(checkpoint, device="cpu").score_files(paths)}
    assert [answer["photo"] for answer in answers] == [str(path) for path in paths]
    for answer in answers:
        assert answer["results"][0]["score"] == pytest.approx(expected[answer["photo"]], abs=1e-5)
