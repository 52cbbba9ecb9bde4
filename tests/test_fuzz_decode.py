"""The decoder under fuzzing: the seed corpus decodes in every input form, and a short coverage-guided run of
benchmarks/fuzz_decode.py (atheris; `pip install 'metaqap-hf[fuzz]'`, skipped without it) ends with every input
scored-ready or named by `ImageLoadError`: no other exception, hang, crash or network access."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from metaqap_hf import load_image
from metaqap_hf.pipeline_image_quality import to_pil_image

from _scoring import cli_environment

ROOT = Path(__file__).resolve().parents[1]
SEEDS = sorted((ROOT / "tests" / "fixtures" / "fuzz_seeds").iterdir())


@pytest.mark.parametrize("seed", SEEDS, ids=[seed.name for seed in SEEDS])
def test_every_seed_decodes_alike_in_every_form(seed):
    data = seed.read_bytes()
    encoded = base64.b64encode(data).decode()
    images = [load_image(data), to_pil_image(str(seed)), to_pil_image(seed), to_pil_image(encoded),
              to_pil_image(f"data:image/x;base64,{encoded}"), to_pil_image({"bytes": data, "path": seed.name})]
    for image in images:
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert image.tobytes() == images[0].tobytes()
    assert images[0].size == ((8, 12) if seed.name == "orientation6.jpg" else (12, 8))


@pytest.mark.slow
def test_a_short_fuzz_run_finds_no_failure(tmp_path):
    pytest.importorskip("atheris")
    output = tmp_path / "summary.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_decode.py"), "--seconds", "30",
                             "--artifacts", str(tmp_path / "artifacts"), "--output", str(output)],
                            env=cli_environment(), capture_output=True, text=True, timeout=600)
    summary = json.loads(output.read_text())
    assert result.returncode == 0, json.dumps(summary.get("failures") or summary.get("crash"), indent=1)[:4000]
    assert summary["result"] == "no failures" and not summary["network_violations"]
    assert summary["iterations"] >= 100
    forms = {key.split(":")[0] for key in summary["outcomes"]}
    assert forms == {"bytes", "file", "base64", "data_uri", "url", "text"}
    assert all(summary["outcomes"].get(f"{form}: decoded") for form in ("bytes", "file", "base64", "data_uri", "url"))
