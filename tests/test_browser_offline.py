"""The page as an app that works with no network, in Chromium (templates/sw.js, static/js/).

A server of the app (testing/browser.py's ``page_server``) serves the tiny colour model and
its ONNX copy on a port that stays the same between servers, so the page's origin, and what
its service worker kept, outlive a server: the page is visited once online, then opened with
the server stopped, and with the browser offline. A second model on the same origin replaces
the kept one. Answers made on the device wait in IndexedDB, with consent, and reach
/monitoring once when the server is back. Each path falls back to the other.
"""

from __future__ import annotations

import json
import re
import urllib.request
from contextlib import contextmanager

import pytest
import torch
from playwright.sync_api import Page, expect

from training.export import export_model
from training.onnx_variants import export_onnx

from testing.load import wait_until
from testing.browser import CHOOSE, DESKTOP, KEEPING, accessibility_violations, page_server
from testing.samples import TINY_LABELS, colour_network, image_bytes
from testing.servers import free_port

pytestmark = pytest.mark.slow

expect.set_options(timeout=60_000)  # a first device answer compiles onnxruntime-web's WebAssembly
RED, GREEN = (255, 0, 0), (0, 255, 0)


def png(name: str, colour) -> dict:
    return {"name": name, "mimeType": "image/png", "buffer": image_bytes(colour=colour)}


@pytest.fixture(scope="module")
def swapped_model(tmp_path_factory):
    """The tiny model's next version, which calls red blue (another network, another hash)."""
    network = colour_network()
    with torch.no_grad():
        network[2].weight.copy_(torch.eye(3).flip(0) * 20.0)
    folder = tmp_path_factory.mktemp("swapped")
    meta = {"name": "tiny-colours", "version": "0.0.2", "dataset": "synthetic"}
    path = export_model(network, TINY_LABELS, meta, folder / "tiny.zip", mean=(0, 0, 0), std=(1, 1, 1))
    return path, export_onnx(path, folder / "tiny.onnx")


@pytest.fixture
def serve(tiny_model_path, tiny_onnx, tmp_path):
    """``serve()`` runs the app on this test's port (one origin for the whole test) and database."""
    port = free_port()
    database = f"sqlite:///{tmp_path / 'monitoring.sqlite'}"

    @contextmanager
    def serve_(model=(tiny_model_path, tiny_onnx)):
        model_path, onnx_path = model
        with page_server(port, LOAD_MODEL=True, MODEL_PATH=str(model_path), ONNX_MODEL_PATH=str(onnx_path),
                         DEVICE_MODEL_PATH=str(onnx_path), DATABASE_URL=database, TORCH_THREADS=1) as url:
            yield url

    return serve_


@pytest.fixture
def context(browser):
    """A browser whose service worker runs; no page may raise a script error or break its CSP."""
    context = browser.new_context(**KEEPING)
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    context.on("console", lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None)
    yield context
    context.close()
    assert not errors, errors


def open_page(context, url: str) -> Page:
    page = context.new_page()
    page.goto(url)
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    return page


def visit_once(context, url: str) -> Page:
    """The first visit: the service worker has kept the page, its files and the model."""
    page = open_page(context, url)
    expect(page.locator("html")).to_have_attribute("data-offline", "ready")
    expect(page.locator("#footer-offline")).to_be_visible()
    return page


def classify(page: Page, name: str, colour) -> str:
    """Choose an image of one colour; the answer line once it is classified."""
    page.get_by_label(CHOOSE).set_input_files(png(name, colour))
    expect(page.get_by_role("status")).to_have_text(re.compile(rf"^{re.escape(name)}: "))
    return page.locator("#timing").text_content()


def status(page: Page):
    return page.get_by_role("status")


def kept_model_files(page: Page) -> list[str]:
    return page.evaluate("""async () => (await (await caches.open("device-model")).keys())
        .map((request) => request.url).filter((url) => url.includes("sha256="))""")


def waiting_to_be_shared(page: Page) -> int:
    return page.evaluate("""() => new Promise((resolve, reject) => {
        const opening = indexedDB.open("classifier", 1);
        opening.onupgradeneeded = () => opening.result.createObjectStore("outbox", { keyPath: "key", autoIncrement: true });
        opening.onsuccess = () => {
            const counting = opening.result.transaction("outbox").objectStore("outbox").count();
            counting.onsuccess = () => { opening.result.close(); resolve(counting.result); };
        };
        opening.onerror = () => reject(opening.error);
    })""")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url) as response:
        return json.load(response)


def test_after_one_visit_the_page_opens_and_classifies_with_the_server_stopped(context, serve):
    with serve() as url:
        page = visit_once(context, url)
        assert classify(page, "first.png", GREEN).startswith("Answered by the server in ")
        expect(status(page)).to_have_text(re.compile(r"^first\.png: green, "))
        assert accessibility_violations(page) == []
        page.close()

    # The server is stopped: the page, its scripts, onnxruntime-web and the model are kept.
    page = open_page(context, url)
    expect(page.locator("#model-info")).to_have_text(
        "Model tiny-colours 0.0.1, on this device: the server cannot be reached · 3 classes")
    expect(page.get_by_role("switch", name="On this device")).not_to_be_checked()  # chosen by itself
    timing = classify(page, "red.png", RED)
    expect(status(page)).to_have_text(re.compile(r"^red\.png: red, "))
    assert re.fullmatch(r"Answered on this device in \d+ ms \(the server did not answer\) · model tiny-colours 0\.0\.1", timing)
    expect(page.get_by_role("list", name="History").get_by_role("button").first).to_contain_text("This device")
    assert accessibility_violations(page) == []

    # And from the browser's cache with no network at all.
    context.set_offline(True)
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    assert classify(page, "green.png", GREEN).startswith("Answered on this device in ")
    expect(status(page)).to_have_text(re.compile(r"^green\.png: green, "))


def test_a_new_model_on_the_server_replaces_the_kept_one_on_the_next_visit(context, serve, swapped_model):
    with serve() as url:
        visit_once(context, url).close()
    with serve(swapped_model):
        page = open_page(context, url)
        page.get_by_role("switch", name="On this device").check()
        timing = classify(page, "red.png", RED)
        expect(status(page)).to_have_text(re.compile(r"^red\.png: blue, "))  # the new model's answer
        assert timing.endswith(" · model tiny-colours 0.0.2")
        page.close()

    # With no server, the kept model is the new one, and the only one.
    page = open_page(context, url)
    classify(page, "red again.png", RED)
    expect(status(page)).to_have_text(re.compile(r"^red again\.png: blue, "))
    expect(page.locator("#timing")).to_contain_text("model tiny-colours 0.0.2")
    assert len(kept_model_files(page)) == 1


def test_answers_made_offline_reach_monitoring_once_with_consent(context, serve):
    share = "Share this browser's answers"
    with serve() as url:
        page = visit_once(context, url)
        expect(page.get_by_role("switch", name=share)).not_to_be_checked()  # off unless switched on
        page.close()

    page = open_page(context, url)
    classify(page, "before.png", GREEN)  # on the device, without consent: not kept
    assert waiting_to_be_shared(page) == 0
    page.get_by_role("switch", name=share).check()
    classify(page, "red.png", RED)
    expect(page.locator("#share-note")).to_have_text("1 waiting in this browser to be sent to the server.")
    choice = page.get_by_role("combobox", name="Wrong? Choose the right class")
    choice.select_option("green")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#feedback-note")).to_have_text(
        "Kept in this browser: red.png is green. It will be sent when the server can be reached.")
    page.reload()  # the queue outlives a reload ...
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    assert waiting_to_be_shared(page) == 2
    page.close()  # ... and a closed tab

    with serve():
        page = open_page(context, url)  # sends what waited
        wait_until(lambda: waiting_to_be_shared(page) == 0, timeout=60, what="sending what waited")
        expect(page.locator("#share-note")).to_have_text("")
        by_source = get_json(f"{url}/monitoring")["by_source"]
        assert by_source["device"] == {"predictions": 1, "feedback": 1, "correct": 0}
        assert by_source["server"]["predictions"] == 0
        open_page(context, url)  # nothing is sent twice
        assert get_json(f"{url}/monitoring")["by_source"]["device"] == {"predictions": 1, "feedback": 1, "correct": 0}


def test_the_page_is_an_installable_app(context, serve):
    with serve() as url:
        page = visit_once(context, url)
        session = context.new_cdp_session(page)
        manifest = session.send("Page.getAppManifest")
        assert manifest["errors"] == [], manifest["errors"]
        parsed = json.loads(manifest["data"])
        assert parsed["display"] == "standalone" and parsed["start_url"] == "/"
        assert {icon["sizes"] for icon in parsed["icons"]} == {"192x192", "512x512"}
        errors = session.send("Page.getInstallabilityErrors")["installabilityErrors"]
        # A test's browser context is a private one, where Chromium installs nothing; that aside, none.
        assert [error for error in errors if error["errorId"] != "in-incognito"] == []


def test_a_path_that_fails_hands_the_image_to_the_other(browser, serve):
    with serve() as url:
        context = browser.new_context(**DESKTOP)  # no service worker, so that routes see every request
        page = open_page(context, url)
        page.route("**/predict", lambda route: route.fulfill(status=503, json={"error": {"code": "model_not_ready", "message": "."}}))
        assert classify(page, "red.png", RED).startswith("Answered on this device in ")
        expect(page.locator("#timing")).to_contain_text("(the server did not answer)")
        expect(status(page)).to_have_text(re.compile(r"^red\.png: red, "))

        # An answer about the image itself is the device's too: no second try.
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.unroute("**/predict")
        page.get_by_label(CHOOSE).set_input_files(files={"name": "notes.txt", "mimeType": "text/plain", "buffer": b"words"})
        expect(page.get_by_role("alert")).to_contain_text("not an image")
        assert not [url for url in requests if "model.onnx" in url]

        # The device chosen, and unable: the server answers.
        page = open_page(context, url)
        page.route("**/model.onnx.json", lambda route: route.fulfill(
            status=404, json={"error": {"code": "device_model_unavailable", "message": "."}}))
        page.get_by_role("switch", name="On this device").check()
        assert classify(page, "green.png", GREEN).startswith("Answered by the server in ")
        expect(page.locator("#timing")).to_contain_text("(this browser could not classify it)")
        expect(page.get_by_role("list", name="History").get_by_role("button").first).to_contain_text("Server")
        context.close()
