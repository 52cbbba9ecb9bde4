"""The decoder under fuzzing: the seed corpus decodes in every input form, and a short coverage-guided run of
benchmarks/fuzz_decode.py (atheris; `pip install 'metaqap-hf[fuzz]'`, skipped without it) ends with every input
scored-ready or named by `ImageLoadError`: no other exception, hang, crash or network access."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from metaqap_hf import ImageLoadError, load_image
from metaqap_hf.image_utils import to_pil_image

from _scoring import cli_environment

ROOT = Path(__file__).resolve().parents[1]
SEEDS = sorted((ROOT / "tests" / "fixtures" / "fuzz_seeds").iterdir())
# Inputs the fuzzer found that did not end in a score or a named error in time, and the error each gets now.
FOUND = {
    "rle-bmp-132-megapixels.bmp": "image of 16515084x8 pixels is too large for PIL's Python bmp_rle decoder",
}


def rle8_bmp(width: int, height: int, value: int = 7) -> bytes:
    """An 8-bit RLE-compressed BMP (decoded by PIL in Python): one run of `value` per row when the width allows,
    else no pixel data at all."""
    rows = (bytes([width, value]) + b"\0\0") * height if width <= 255 else b""
    data = rows + b"\0\1"
    palette = b"".join(bytes([index, index, index, 0]) for index in range(256))
    offset = 14 + 40 + len(palette)
    return (b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0) + palette + data)


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


@pytest.mark.parametrize("name", sorted(FOUND))
def test_inputs_the_fuzzer_found_end_in_a_named_error(name):
    data = (ROOT / "tests" / "fixtures" / "fuzz_failures" / name).read_bytes()
    for form in (data, f"data:image/bmp;base64,{base64.b64encode(data).decode()}"):
        with pytest.raises(ImageLoadError, match=FOUND[name]):
            to_pil_image(form)
    with pytest.raises(ImageLoadError, match="neither an existing file nor base64-encoded image data"):
        to_pil_image(base64.b64encode(data).decode())  # a bare base64 string's failure is reported as such


def test_images_for_a_python_decoder_are_refused_past_their_limit_before_decoding():
    small = load_image(rle8_bmp(64, 48))
    assert small.size == (64, 48) and small.getpixel((5, 5)) == (7, 7, 7)
    with pytest.raises(ImageLoadError, match=r"5000x4000 pixels is too large for PIL's Python bmp_rle decoder"):
        load_image(rle8_bmp(5000, 4000), name="wide.bmp")


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
