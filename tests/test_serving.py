"""`metaqap serve` / `metaqap_hf.serving` on loopback: results equal the library's, concurrent requests are batched,
overload is refused with Retry-After and loses no accepted request, hostile requests leave the server serving, and
SIGTERM finishes the accepted requests. Every request goes to 127.0.0.1; counts and times are bounded."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from metaqap_hf.errors import OptionError
from metaqap_hf.scoring import ImageScorer
from metaqap_hf.serving import ScoringService, ServiceLimits

from _images import random_photo
from _scoring import cli_environment, metaqap_command, save_tiny_checkpoint, write_photos
from _serving import encoded, png_header_only, raw_request, read_response, running_service


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serving") / "tiny")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 8 small PNG photos."""
    return write_photos(tmp_path_factory.mktemp("serving-photos") / "photos", 8)


@pytest.fixture(scope="module")
def expected(checkpoint, photos):
    """The library's result for each photo (float32, as the services below run)."""
    scorer = ImageScorer(checkpoint, device="cpu", dtype="float32")
    return {Path(item.path).name: item for item in scorer.score_files([photos])}


def service(checkpoint, **limits) -> ScoringService:
    return ScoringService(checkpoint, device="cpu", dtype="float32", limits=ServiceLimits(**limits))


def metric(text: str, name: str) -> float:
    return sum(float(value) for value in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def assert_matches(result: dict, item) -> None:
    assert set(result) == {"name", "score", "raw_score", "base_scores", "std"}
    assert result["score"] == pytest.approx(item.score, abs=1e-5)
    assert result["raw_score"] == pytest.approx(item.raw_score, abs=1e-5)
    assert result["base_scores"] == pytest.approx(item.base_scores, abs=1e-5)
    assert result["std"] == pytest.approx(item.std, abs=1e-5)


async def post_many(url: str, bodies: list[bytes], concurrency: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.post("/score", content=body) for body in bodies))


def test_200_concurrent_requests_are_batched_and_each_matches_the_library(checkpoint, photos, expected):
    names = sorted(expected)
    bodies = {name: (photos / name).read_bytes() for name in names}
    order = [names[index % len(names)] for index in range(200)]
    with running_service(service(checkpoint, max_batch=16, max_wait_ms=20, max_queue=200)) as url:
        responses = asyncio.run(post_many(url, [bodies[name] for name in order], concurrency=50))
        text = httpx.get(f"{url}/metrics").text
    assert [response.status_code for response in responses] == [200] * 200
    for name, response in zip(order, responses):
        (result,) = response.json()["results"]
        assert_matches(result, expected[name])
    assert metric(text, 'metaqap_requests_total{status="200"}') == 200
    batches = metric(text, "metaqap_batch_size_count")
    assert metric(text, "metaqap_batch_size_sum") == 200
    assert batches < 200 / 2, f"200 concurrent requests took {batches:g} forward passes: not batched"


def test_multipart_scores_each_file_and_names_the_bad_ones(checkpoint, photos, expected):
    files = [("file", ("00.png", (photos / "00.png").read_bytes())), ("file", ("notes.txt", b"not an image")),
             ("file", ("01.png", (photos / "01.png").read_bytes())), ("file", ("cut.png", encoded(random_photo(3))[:300]))]
    with running_service(service(checkpoint)) as url:
        response = httpx.post(f"{url}/score", files=files, data={"comment": "x"}, timeout=60)
        nothing = httpx.post(f"{url}/score", files=[("file", ("empty.jpg", b""))], timeout=60)
    assert response.status_code == 200
    body = response.json()
    assert (body["scored"], body["skipped"]) == (2, 3)
    results = {result["name"]: result for result in body["results"]}
    assert [result["name"] for result in body["results"]] == ["comment", "00.png", "notes.txt", "01.png", "cut.png"]
    assert_matches(results["00.png"], expected["00.png"])
    assert_matches(results["01.png"], expected["01.png"])
    assert results["notes.txt"]["error"] == "not an image file PIL can read"
    assert "truncated" in results["cut.png"]["error"]
    assert results["comment"]["error"] == "a form field, not a file"
    assert nothing.status_code == 422 and nothing.json()["results"] == [{"name": "empty.jpg",
                                                                           "error": "empty file (0 bytes)"}]


def test_overload_is_refused_with_retry_after_and_no_accepted_request_is_lost(checkpoint, photos, expected):
    body = (photos / "02.png").read_bytes()
    # A long batching wait keeps requests in flight, so 40 at once overflow a queue of 4.
    with running_service(service(checkpoint, max_batch=64, max_wait_ms=300, max_queue=4)) as url:
        responses = asyncio.run(post_many(url, [body] * 40, concurrency=40))
        text = httpx.get(f"{url}/metrics").text
        after = httpx.post(f"{url}/score", content=body, timeout=60)
    codes = [response.status_code for response in responses]
    assert set(codes) == {200, 503} and codes.count(200) >= 4
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1" and "busy" in response.json()["error"]
        else:
            assert_matches(response.json()["results"][0], expected["02.png"])
    assert metric(text, 'metaqap_rejections_total{reason="queue_full"}') == codes.count(503)
    assert metric(text, 'metaqap_requests_total{status="200"}') == codes.count(200)
    assert after.status_code == 200


def test_hostile_requests_each_get_a_named_answer_and_the_server_keeps_serving(checkpoint, photos, expected):
    good = (photos / "03.png").read_bytes()
    limits = dict(max_body_bytes=200_000, max_pixels=1_000_000, timeout=1.5)
    with running_service(service(checkpoint, **limits)) as url:
        def still_serving():
            response = httpx.post(f"{url}/score", content=good, timeout=60)
            assert response.status_code == 200
            assert_matches(response.json()["results"][0], expected["03.png"])

        def post(content: bytes) -> httpx.Response:
            response = httpx.post(f"{url}/score", content=content, timeout=60)
            still_serving()
            return response

        truncated = post(encoded(random_photo(1, size=(200, 200)), "JPEG")[:2000])
        assert truncated.status_code == 422 and "truncated" in truncated.json()["results"][0]["error"]
        not_image = post(b"%PDF-1.4 this is no image" * 10)
        assert not_image.json()["results"][0]["error"] == "not an image file PIL can read"
        oversized = post(b"\xff" * 300_000)
        assert oversized.status_code == 413 and "200000 bytes" in oversized.json()["error"]
        bomb = post(png_header_only(12_000, 12_000))  # under PIL's bomb limit, over the service's
        assert bomb.status_code == 422
        assert "12000x12000 pixels is over this service's limit of 1000000" in bomb.json()["results"][0]["error"]
        huge_bomb = post(png_header_only(40_000, 40_000))  # PIL refuses to open it: the decoder names it
        assert huge_bomb.json()["results"][0]["error"].startswith("too large to score")
        too_many_pixels = post(encoded(Image.new("RGB", (1000, 1100), "gray")))
        assert "1000x1100 pixels is over" in too_many_pixels.json()["results"][0]["error"]

        # A client that never finishes its body: answered 408 after the timeout while others are served.
        slow = raw_request(url, b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", b"\x89PNG")
        still_serving()
        answer = read_response(slow).decode("latin-1")
        slow.close()
        assert answer.startswith("HTTP/1.1 408") and "did not arrive within 1.5 s" in answer

        # A client that disconnects mid-body, and one that disconnects while its image is scored.
        for head, body in [(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", good[:100]),
                           (f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: {len(good)}\r\n\r\n".encode(), good)]:
            raw_request(url, head, body).close()
            still_serving()
        deadline = time.monotonic() + 10
        while metric(httpx.get(f"{url}/metrics").text, "metaqap_requests_in_flight") and time.monotonic() < deadline:
            time.sleep(0.05)
        text = httpx.get(f"{url}/metrics").text
    assert metric(text, "metaqap_requests_in_flight") == 0
    assert metric(text, 'metaqap_rejections_total{reason="body_timeout"}') == 1
    assert metric(text, 'metaqap_rejections_total{reason="body_too_large"}') == 1


def test_a_score_not_ready_within_the_timeout_is_answered_503_and_dropped_from_its_batch(checkpoint, photos):
    body = (photos / "05.png").read_bytes()
    # The batch waits 1.5 s for company, longer than the 0.5 s a request may take.
    with running_service(service(checkpoint, max_batch=8, max_wait_ms=1500, timeout=0.5)) as url:
        late = httpx.post(f"{url}/score", content=body, timeout=60)
        time.sleep(1.5)  # the batch it left runs without it
        text = httpx.get(f"{url}/metrics").text
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert "not scored within this service's timeout of 0.5 s" in late.json()["error"]
    assert metric(text, 'metaqap_rejections_total{reason="timeout"}') == 1
    assert metric(text, "metaqap_batch_size_count") == 0 and metric(text, "metaqap_requests_in_flight") == 0


def test_probes_usage_page_and_query_options(checkpoint, photos):
    with running_service(service(checkpoint)) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["status"] == "ready" and ready["dtype"] == "float32" and ready["mos_range"] == [0.0, 1.0]
        assert "curl --data-binary @photo.jpg" in httpx.get(f"{url}/").text
        body = (photos / "00.png").read_bytes()
        faults = httpx.post(f"{url}/score?faults=true", content=body)
        assert faults.status_code == 400 and "no fault head" in faults.json()["error"]
        assert httpx.post(f"{url}/score?faults=false", content=body).status_code == 200
        unknown = httpx.post(f"{url}/score?fautls=1", content=body)
        assert unknown.status_code == 400 and "fautls" in unknown.json()["error"]
        text = httpx.get(f"{url}/metrics").text
    assert "# TYPE metaqap_request_duration_seconds histogram" in text
    assert metric(text, 'metaqap_requests_total{status="400"}') == 2


def test_bad_options_are_named_before_the_model_loads(checkpoint):
    from metaqap_cli import main

    assert main(["serve", "--max-batch", "0", "--model", str(checkpoint)]) == 2
    with pytest.raises(SystemExit) as exit_info:  # argparse's own check of the choices
        main(["serve", "--dtype", "float16"])
    assert exit_info.value.code == 2
    for bad in ({"max_wait_ms": float("nan")}, {"timeout": 0}, {"max_queue": 2.5}, {"max_batch": True}):
        with pytest.raises(OptionError, match=next(iter(bad))):
            ServiceLimits(**bad)


@pytest.mark.slow
def test_sigterm_during_load_answers_every_accepted_request(checkpoint, photos, expected):
    process = subprocess.Popen(metaqap_command("serve", "--model", str(checkpoint), "--port", "0", "--dtype",
                                               "float32", "--max-batch", "64", "--max-wait-ms", "1500"),
                               env=cli_environment(), stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        url = re.search(r"on (http://127\.0\.0\.1:\d+)", line).group(1)
        body = (photos / "04.png").read_bytes()

        async def load_then_terminate():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                requests = [asyncio.create_task(client.post("/score", content=body)) for _ in range(12)]
                deadline = time.monotonic() + 30
                while metric((await client.get("/metrics")).text, "metaqap_requests_in_flight") < 12:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*requests)

        responses = asyncio.run(load_then_terminate())
        assert process.wait(timeout=60) == 130
        assert "interrupted" in process.stderr.read()
    finally:
        process.kill()
        process.stderr.close()
    assert [response.status_code for response in responses] == [200] * 12
    for response in responses:
        assert_matches(response.json()["results"][0], expected["04.png"])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_commands_serve_and_score_through_curl(checkpoint, tmp_path):
    """The README's `metaqap serve` and `curl` lines, as written (the tiny model and a free port appended)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Serve it over HTTP"):]
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in section[:section.index("\n## ")].splitlines()
             if line.startswith(("metaqap serve", "curl "))]
    (serve_line,), curl_lines = [line for line in lines if line.startswith("metaqap")], lines[1:]
    assert len(curl_lines) == 2
    for index, name in enumerate(("photo.jpg", "a.jpg", "b.png")):
        random_photo(index, size=(40, 56)).save(tmp_path / name)
    process = subprocess.Popen(metaqap_command(*serve_line.split()[1:], "--model", str(checkpoint), "--port", "0"),
                               env=cli_environment(), stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url = re.search(r"on (http://127\.0\.0\.1:\d+)", process.stderr.readline()).group(1)
        for line in curl_lines:
            answer = subprocess.run(["bash", "-c", line.replace("http://127.0.0.1:8000", url)], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120)
            assert answer.returncode == 0, answer.stderr
            body = json.loads(answer.stdout)
            assert body["skipped"] == 0 and body["scored"] == line.count("@")
    finally:
        process.terminate()
        process.wait(timeout=60)
        process.stderr.close()


def test_faults_are_returned_when_asked_and_match_the_pipeline(tmp_path, photos):
    """A model with a fault head: `?faults=true` adds the pipeline's `faults` (`faults=True`), and requests without
    it, batched with those that ask, get results without the key."""
    from transformers import pipeline

    faulty = save_tiny_checkpoint(tmp_path / "tiny-faults", fault_head=True)
    reference = pipeline("image-quality", model=str(faulty), device="cpu")(str(photos / "00.png"), faults=True)
    body = (photos / "00.png").read_bytes()

    async def both(url):
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(client.post(f"{url}/score?faults=true", content=body),
                                        client.post(f"{url}/score", content=body))

    with running_service(service(faulty, max_wait_ms=200)) as url:
        asked, plain = asyncio.run(both(url))
    assert asked.status_code == plain.status_code == 200
    (with_faults,), (without,) = asked.json()["results"], plain.json()["results"]
    assert "faults" not in without and with_faults["score"] == pytest.approx(without["score"], abs=1e-6)
    assert [fault["label"] for fault in with_faults["faults"]] == [fault["label"] for fault in reference["faults"]]
    for got, want in zip(with_faults["faults"], reference["faults"]):
        assert got["family"] == want["family"] and got["score"] == pytest.approx(want["score"], abs=1e-5)
