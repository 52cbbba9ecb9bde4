import base64
import http.server
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from metaqap_hf import ImageLoadError, ImageQualityPipeline

from _images import random_photo


@pytest.fixture
def scorer(tiny_checkpoint):
    return pipeline("image-quality", model=str(tiny_checkpoint))


def test_task_is_registered_and_returns_plain_python(scorer):
    assert isinstance(scorer, ImageQualityPipeline)
    result = scorer(random_photo(0))
    assert set(result) == {"score", "raw_score", "base_scores", "std"}
    assert isinstance(result["score"], float) and isinstance(result["std"], float)
    assert list(result["base_scores"]) == ["test_efficientnet", "test_resnet"]
    assert 0.0 <= result["std"]


def test_paths_pil_numpy_and_tensors_give_the_same_score(scorer, tmp_path):
    image = random_photo(1)
    path = tmp_path / "photo.png"
    image.save(path)
    array = np.asarray(image)
    scores = [
        scorer(str(path))["score"],
        scorer(path)["score"],
        scorer(image)["score"],
        scorer(array)["score"],
        scorer(array.astype(np.float32) / 255)["score"],
        scorer(torch.from_numpy(array).permute(2, 0, 1).contiguous())["score"],
        scorer({"image": image})["score"],
    ]
    assert scores == pytest.approx([scores[0]] * len(scores), abs=1e-6)


def test_batched_equals_one_by_one(scorer):
    images = [random_photo(seed, size=(60 + 7 * seed, 90)) for seed in range(5)]
    single = [scorer(image) for image in images]
    batched = scorer(images, batch_size=4)
    assert len(batched) == 5
    for one, many in zip(single, batched):
        assert many["score"] == pytest.approx(one["score"], abs=1e-5)
        assert many["std"] == pytest.approx(one["std"], abs=1e-5)
        for name in one["base_scores"]:
            assert many["base_scores"][name] == pytest.approx(one["base_scores"][name], abs=1e-5)
    assert len({round(r["score"], 6) for r in single}) > 1, "different images should score differently"


def test_datasets_input_streams_results(scorer):
    import datasets

    images = [random_photo(seed) for seed in range(3)]
    dataset = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    streamed = list(scorer(dataset, batch_size=2))
    direct = scorer(images)
    assert [r["score"] for r in streamed] == pytest.approx([r["score"] for r in direct], abs=1e-5)


def test_scores_are_identical_run_to_run(tiny_checkpoint):
    image = random_photo(7)
    first = pipeline("image-quality", model=str(tiny_checkpoint))(image)
    second = pipeline("image-quality", model=str(tiny_checkpoint))(image)
    assert first == second


def test_bad_inputs_raise_errors_naming_the_problem(scorer, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not really a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        scorer(str(broken))
    with pytest.raises(ImageLoadError, match="no such file"):
        scorer(str(tmp_path / "missing.png"))
    with pytest.raises(ImageLoadError, match="float images must hold finite values"):
        scorer(np.full((8, 8, 3), 2.0, dtype=np.float32))
    with pytest.raises(TypeError, match="unexpected arguments"):
        scorer(random_photo(0), top_k=3)


# --- the inputs transformers' image pipelines take ---------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    photo = b""

    def do_GET(self):  # noqa: N802 - the http.server API
        if self.path == "/slow.png":
            time.sleep(3)
        body, status = {"/photo.png": (self.photo, 200), "/slow.png": (self.photo, 200),
                        "/page.png": (b"<html>not a photo</html>", 200)}.get(self.path, (b"gone", 404))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web_server(tmp_path):
    """A photo on a local HTTP server (127.0.0.1 only, never the internet)."""
    path = tmp_path / "photo.png"
    random_photo(4).save(path)
    _Handler.photo = path.read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", path
    server.shutdown()


def test_urls_base64_and_data_uris_score_like_the_file(scorer, web_server):
    base_url, path = web_server
    expected = scorer(str(path))["score"]
    encoded = base64.b64encode(path.read_bytes()).decode()
    assert scorer(f"{base_url}/photo.png", timeout=10)["score"] == expected
    assert scorer(encoded)["score"] == expected
    assert scorer(f"data:image/png;base64,{encoded}")["score"] == expected
    assert scorer({"bytes": path.read_bytes(), "path": "photo.png"})["score"] == expected


def test_url_failures_name_the_url_and_the_problem(scorer, web_server):
    base_url, _ = web_server
    with pytest.raises(ImageLoadError, match=r"/missing.png: HTTP 404"):
        scorer(f"{base_url}/missing.png")
    with pytest.raises(ImageLoadError, match=r"/slow.png: no answer within the timeout \(0.5 s\)"):
        scorer(f"{base_url}/slow.png", timeout=0.5)
    with pytest.raises(ImageLoadError, match=r"/page.png: not an image file PIL can read"):
        scorer(f"{base_url}/page.png")
    with pytest.raises(ImageLoadError, match="could not fetch it"):
        scorer("http://127.0.0.1:9/photo.png", timeout=5)  # the discard port: nothing listens
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        scorer(f"{base_url}/photo.png", timeout=-1)


def test_a_url_body_over_the_limit_is_not_read(scorer, web_server, monkeypatch):
    import metaqap_hf.image_utils as image_utils

    base_url, path = web_server
    monkeypatch.setattr(image_utils, "MAX_ENCODED_BYTES", path.stat().st_size - 1)
    with pytest.raises(ImageLoadError, match=rf"/photo.png: larger than {path.stat().st_size - 1} bytes, not read$"):
        scorer(f"{base_url}/photo.png")


def test_strings_that_are_neither_files_nor_images(scorer):
    with pytest.raises(ImageLoadError, match="neither an existing file nor base64-encoded image data"):
        scorer("QUJDRA" * 8)
    with pytest.raises(ImageLoadError, match="no such file or directory"):
        scorer("holiday/photo.jpg")
    with pytest.raises(ImageLoadError, match="a data URI needs ';base64,'"):
        scorer("data:image/png,rawbytes")


def test_empty_inputs_give_empty_results(scorer):
    import datasets

    assert scorer([]) == [] and scorer(()) == []
    empty = datasets.Dataset.from_dict({"image": []}, features=datasets.Features({"image": datasets.Image()}))
    assert scorer(empty) == []


def test_float_and_low_precision_inputs(scorer):
    grey = random_photo(5).convert("L")
    unit = np.asarray(grey, dtype=np.float32) / 255
    expected = scorer(grey)["score"]
    assert scorer(Image.fromarray(unit))["score"] == expected  # PIL mode "F" in [0, 1], e.g. a float TIFF
    assert scorer(unit.astype(np.float16))["score"] == pytest.approx(expected, abs=1e-3)
    colour = torch.from_numpy(np.asarray(random_photo(5))).permute(2, 0, 1).float() / 255
    assert scorer(colour.to(torch.bfloat16))["score"] == pytest.approx(scorer(colour)["score"], abs=0.02)


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((0, 10, 3), np.uint8), "holds no pixels"),
    (Image.new("RGB", (0, 0)), "holds no pixels"),
    (np.zeros((2, 8, 8, 3), np.uint8), "is not an image"),
    (np.zeros((8, 8), np.int64), "unsupported array dtype int64"),
    (np.zeros((8, 8), bool), "unsupported array dtype bool"),
    (torch.zeros(3, 8, 8, device="meta"), "meta device"),
    (torch.zeros(3, 8, 8, dtype=torch.complex64), "unsupported tensor dtype"),
    (42, "expected a file path, PIL image or numpy array, got int"),
    ({"label": 1}, "needs an 'image' key"),
])
def test_unusable_inputs_raise_image_load_errors(scorer, image, message):
    with pytest.raises(ImageLoadError, match=message):
        scorer(image)
