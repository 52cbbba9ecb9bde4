"""The Gradio demo in spaces/metaqap-demo, driven for real: the app serves on 127.0.0.1 with the bundled model,
headless Chromium (Debian's package, through Playwright) uploads two photos, and the scores and top faults on the
page must be the pipeline's. The page may not reach anything outside the loopback server. A screenshot is saved next
to the test's files, and to $METAQAP_DEMO_SCREENSHOT when set."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
from transformers import pipeline

pytest.importorskip("gradio", reason="the demo extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

APP = Path(__file__).resolve().parents[1] / "spaces" / "metaqap-demo" / "app.py"
PHOTOS = Path(__file__).parent / "fixtures" / "photos"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a machine without network: no update checks, no first-run work, nothing fetched in the background.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-default-apps", "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
                 "--metrics-recording-only", "--no-default-browser-check"]

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")


def load_app():
    specification = importlib.util.spec_from_file_location("metaqap_demo_app", APP)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """The app on a free loopback port: (url, app module)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    app = load_app()
    demo = app.build_demo()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                **app.LAUNCH_STYLE)
    yield f"http://127.0.0.1:{port}/", app
    demo.close()


def test_uploaded_photos_show_the_pipelines_scores_ratings_and_pictures(served, tmp_path):
    url, app = served
    photos = [PHOTOS / "scene.png", PHOTOS / "scene_blur.png"]
    outside = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def only_loopback(route):
                if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost") or \
                        route.request.url.startswith(("data:", "blob:")):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_loopback)
            page.goto(url, wait_until="networkidle")
            page.locator("#photos input[type=file]").set_input_files([str(path) for path in photos])
            cards = page.locator("#summary .score-card")
            cards.nth(1).wait_for(timeout=120_000)
            page.locator("#pictures img").first.wait_for(timeout=60_000)
            page.locator("#table table").first.wait_for(timeout=30_000)
            shown = {card.locator(".name").inner_text(): (card.locator(".score-value").inner_text(),
                                                          card.locator(".rating").inner_text(),
                                                          card.locator(".spread").inner_text(),
                                                          card.locator(".faults").inner_text())
                     for card in cards.all()}
            table_text = page.locator("#table").inner_text()
            picture_height = page.locator("#pictures img").first.evaluate("image => image.naturalHeight")
            screenshot = tmp_path / "demo.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    if os.environ.get("METAQAP_DEMO_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["METAQAP_DEMO_SCREENSHOT"])

    assert not outside, f"the page tried to reach {outside}"
    scorer = pipeline("image-quality")
    mos_range = tuple(scorer.model.config.mos_range)
    assert set(shown) == {path.name for path in photos}
    for path in photos:
        expected = scorer(str(path), faults=True)
        score, words, spread, faults = shown[path.name]
        assert faults == f"Likely faults: {app.fault_words(expected['faults'])}"  # the bundled model's fault head
        assert float(score) == pytest.approx(expected["score"], abs=0.5e-3 + 1e-6)  # shown with 3 decimals
        assert words == app.rating(expected["score"], mos_range)[0]
        assert float(re.search(r"±([0-9.]+)", spread).group(1)) == pytest.approx(expected["std"], abs=0.5e-3 + 1e-6)
        for value in (expected["score"], *expected["base_scores"].values()):  # the table has 4 decimals
            assert f"{round(value, 4):g}" in table_text
    assert float(shown["scene.png"][0]) > float(shown["scene_blur.png"][0])
    assert picture_height >= 2 * 300  # one chart for each photo, one under the other
    assert screenshot.stat().st_size > 50_000
