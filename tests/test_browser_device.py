"""'On this device' in a real browser: Chromium runs the model's browser form with onnxruntime-web.

The same page, against the Procfile's gunicorn, classifies data-set images (JPEG, and the
data set's own TIFF) once through the server and once in the browser. The browser must give
the answers of the form the server hands out (scores within 0.01 of ONNX Runtime's on that
file, in this process), and the server's best class wherever the server is not torn between
two; how far the form's scores may stand from the served model's was measured on the whole
validation split when it was chosen (its manifest; docs/model-variants.md). The browser's
resizing is checked byte for byte against Pillow's; the page loads the model and
onnxruntime-web only on first use, from its own origin, and its service worker keeps them on
a first visit: what that visit costs, as nginx sends it, is written to
test-results/first-visit.json.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import onnxruntime
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from classifier.engines import softmax
from classifier.images import decode_image, resize_for_model

from testing import ROOT
from testing.browser import CHOOSE, DESKTOP, KEEPING, SCREENSHOTS, page_server
from testing.samples import model_answer
from testing.servers import procfile_server

pytestmark = pytest.mark.slow

PARITY_TOLERANCE = 0.01
REPORT = ROOT / "test-results" / "device-parity.json"
FIRST_VISIT = ROOT / "test-results" / "first-visit.json"
DEVICE_FILES = re.compile(r"/(model\.onnx(\.json)?|static/vendor/onnxruntime-web/[^?]*)(\?.*)?$")
# nginx's access line (config/nginx.conf.template, log_format front): the request and the bytes sent.
ACCESS_LINE = re.compile(r'\] "GET (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+) ')

expect.set_options(timeout=60_000)  # the first device answer compiles onnxruntime-web's WebAssembly


@pytest.fixture(scope="module")
def server_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("device") / "server.log"


@pytest.fixture(scope="module")
def server(server_log):
    with procfile_server(log_path=server_log) as (url, _):
        yield url


@pytest.fixture
def open_page(browser):
    """A fresh page; afterwards it must have raised no script error and had nothing refused by
    its Content-Security-Policy (the browser reports those on the console)."""
    contexts, errors = [], []

    def open_(url: str) -> Page:
        context = browser.new_context(**DESKTOP)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None)
        page.goto(url)
        expect(page.locator("html")).to_have_attribute("data-ready", "true")
        contexts.append(context)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors


def form_answers(server: str, images: list[Path]) -> tuple[dict, list[dict[str, float]]]:
    """The manifest the server gives the page, and ONNX Runtime's answers on the file it hands out,
    for the server's pixels: what the browser must compute."""
    with urllib.request.urlopen(f"{server}/model.onnx.json", timeout=30) as response:
        manifest = json.load(response)
    with urllib.request.urlopen(f"{server}{manifest['url']}", timeout=60) as response:
        model = response.read()
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    pixels = np.stack([np.asarray(resize_for_model(decode_image(path.read_bytes())), dtype=np.float32)
                       for path in images]).transpose(0, 3, 1, 2) / 255
    probabilities = softmax(session.run(None, {"pixels": pixels})[0])
    return manifest, [dict(zip(manifest["labels"], row)) for row in probabilities.tolist()]


def one_image_per_class(data_dir: Path) -> list[Path]:
    classes = sorted(path for path in (data_dir / "ucmerced").iterdir() if path.is_dir())
    return [folder / f"{folder.name}07.jpg" for folder in classes]


def switch(page: Page):
    return page.get_by_role("switch", name="On this device")


def classify(page: Page, path: Path, where: str) -> list[tuple[str, float]]:
    """Choose ``path`` on the page and read the answer it shows: (label, exact score) best first."""
    page.get_by_label(CHOOSE).set_input_files(path)
    expect(page.get_by_role("status")).to_have_text(re.compile(rf"^{re.escape(path.name)}: "))
    expect(page.locator("#timing")).to_have_text(re.compile(rf"^Answered {where} in "))
    rows = page.locator("#scores li").evaluate_all("rows => rows.map(r => [r.dataset.label, Number(r.dataset.score)])")
    assert rows, "no scores shown"
    return [(label, score) for label, score in rows]


def test_device_and_server_agree_on_data_set_images(open_page, server, data_dir):
    page = open_page(server)
    images = one_image_per_class(data_dir)
    assert len(images) >= 10
    manifest, expected = form_answers(server, images)
    comparisons = []
    for path, form_scores in zip(images, expected):
        expect(switch(page)).not_to_be_checked()
        on_server = classify(page, path, "by the server")
        switch(page).check()
        on_device = classify(page, path, "on this device")
        switch(page).uncheck()
        server_scores = dict(on_server)
        comparisons.append(
            {
                "image": path.name,
                "form": manifest["form"],
                "server": on_server[0],
                "device": on_device[0],
                # How far the server's best class leads its runner-up.
                "server_margin": on_server[0][1] - on_server[1][1] if len(on_server) > 1 else 1.0,
                # Every class both paths list in their top 5.
                "max_score_difference": max(abs(server_scores[label] - score) for label, score in on_device if label in server_scores),
                # The browser against the form it was handed, computed here: every class it lists.
                "max_form_difference": max(abs(form_scores[label] - score) for label, score in on_device),
            }
        )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(comparisons, indent=2))
    for row in comparisons:
        # The same best class, unless a model (a user's, trained briefly) is torn between two
        # classes closer than twice the scores' difference: only then may they swap places.
        if row["server_margin"] > 2 * row["max_score_difference"]:
            assert row["device"][0] == row["server"][0], row
        assert row["max_form_difference"] < PARITY_TOLERANCE, row
        if manifest["form"] == "fp32":  # the server's own network: its scores, not just its answers
            assert row["max_score_difference"] < PARITY_TOLERANCE, row
    paths = page.get_by_role("list", name="History").get_by_role("button").evaluate_all("items => items.map(i => i.dataset.path)")
    assert paths == ["device", "server"] * len(images)  # newest first


def test_the_model_loads_on_first_use_from_this_origin_with_a_message(open_page, server, dataset_jpeg):
    page = open_page(server)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    switch(page).check()
    expect(page.locator("#footer-device")).to_be_visible()
    expect(page.locator("#footer-server")).to_be_hidden()
    page.wait_for_timeout(300)
    assert not [url for url in requests if DEVICE_FILES.search(url)], "downloaded before first use"

    # Hold the model back for a moment, so the loading message can be seen.
    def slow_model(route):
        page.wait_for_timeout(1500)
        route.continue_()

    page.route("**/model.onnx?sha256=*", slow_model)
    page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
    expect(page.get_by_role("status")).to_have_text(re.compile("^Loading the model into this browser"))
    _, [scores] = form_answers(server, [dataset_jpeg])
    label = max(scores, key=scores.get)  # the browser form's own answer
    expect(page.get_by_role("status")).to_have_text(re.compile(rf"^airplane00\.jpg: {re.escape(label)}, "))
    expect(page.get_by_role("list", name="History").get_by_role("button").first).to_contain_text("This device")
    fetched = [url for url in requests if DEVICE_FILES.search(url)]
    assert {Path(urlsplit(url).path).name for url in fetched} >= {"model.onnx.json", "model.onnx", "ort-wasm-simd-threaded.wasm"}
    assert all(url.startswith(server) for url in fetched)
    assert not [url for url in requests if "/predict" in url], "the device path sent the image to the server"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "page-device.png")


def test_a_server_whose_model_changed_answers_itself(open_page, tiny_model_path, dataset_jpeg):
    # model.onnx was exported from model.zip; this server serves another model, so it offers
    # browsers none, and answers an image meant for the device itself.
    with page_server(MODEL_PATH=str(tiny_model_path), LOAD_MODEL=True, INFERENCE_ENGINE="torchscript") as url:
        page = open_page(url)
        switch(page).check()
        page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
        expect(page.locator("#timing")).to_have_text(re.compile(
            r"^Answered by the server in .* \(this browser could not classify it\) · model tiny-colours 0\.0\.1$"))
        label = model_answer(dataset_jpeg, tiny_model_path)["label"]
        expect(page.get_by_role("status")).to_have_text(re.compile(rf"^airplane00\.jpg: {label}, "))


def test_a_tiff_is_previewed_and_classified_alike_on_both_paths(open_page, server, dataset_tiff):
    """The data set's own format: decoded in the browser by the vendored decoder (tiff, npm)."""
    page = open_page(server)
    on_server = classify(page, dataset_tiff, "by the server")
    preview = page.get_by_role("img", name=f"Preview of {dataset_tiff.name}")
    expect(preview).to_be_visible()
    assert preview.evaluate("image => [image.naturalWidth, image.naturalHeight]") == [256, 256]
    expect(page.locator("#preview-note")).to_be_hidden()
    switch(page).check()
    on_device = classify(page, dataset_tiff, "on this device")
    manifest, [form_scores] = form_answers(server, [dataset_tiff])
    # The rule of the JPEG parity test above: the form's own answers, the server's best class
    # unless the server is torn between two, and the server's scores with the float32 form.
    server_scores = dict(on_server)
    difference = max(abs(server_scores[label] - score) for label, score in on_device if label in server_scores)
    if len(on_server) == 1 or on_server[0][1] - on_server[1][1] > 2 * difference:
        assert on_device[0][0] == on_server[0][0]
    assert max(abs(form_scores[label] - score) for label, score in on_device) < PARITY_TOLERANCE
    if manifest["form"] == "fp32":
        assert difference < PARITY_TOLERANCE


def test_a_first_visit_keeps_the_page_and_the_model_for_offline_use(browser, server, server_log):
    """What the service worker downloads, as nginx sends it (compressed where it pays)."""
    logged = server_log.stat().st_size
    context = browser.new_context(**KEEPING)
    try:
        page = context.new_page()
        page.goto(server)
        expect(page.locator("html")).to_have_attribute("data-offline", "ready")
    finally:
        context.close()
    with server_log.open("rb") as log:
        log.seek(logged)
        sent = [match.groupdict() for match in ACCESS_LINE.finditer(log.read().decode(errors="replace"))]
    # The page's own requests, then the service worker's (304 for what the page just fetched).
    assert {line["status"] for line in sent} <= {"200", "304"}, sent
    by_path: dict[str, int] = {}
    for line in sent:
        by_path[line["path"]] = by_path.get(line["path"], 0) + int(line["bytes"])
    manifest = json.loads(urllib.request.urlopen(f"{server}/model.onnx.json").read())
    model = f"{manifest['url']}?sha256={manifest['sha256']}"
    wasm = "/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"
    # The weights are sent whole (they barely compress), once; onnxruntime-web's WebAssembly gzipped.
    assert by_path[model] == len(urllib.request.urlopen(server + manifest["url"]).read())
    assert by_path[wasm] < (ROOT / wasm.lstrip("/")).stat().st_size / 2
    FIRST_VISIT.parent.mkdir(parents=True, exist_ok=True)
    FIRST_VISIT.write_text(json.dumps({"total_bytes": sum(by_path.values()), "by_path": by_path}, indent=2))


def test_without_a_device_model_the_switch_is_not_offered(open_page):
    with page_server(DEVICE_MODEL_PATH="") as url:
        page = open_page(url)
        expect(switch(page)).to_be_hidden()


# Same size (no resize), down, up, and big enough for the block reduction (factor 2; 1 × 3).
@pytest.mark.parametrize("size", [(256, 256), (300, 200), (150, 100), (1400, 1000), (700, 2100)])
def test_the_browser_resizes_exactly_as_the_server(open_page, server, size):
    """resample.js against Pillow, on noise (the hardest case for rounding), byte for byte."""
    page = open_page(server)
    rng = np.random.default_rng(size[0])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    expected = np.asarray(resize_for_model(Image.fromarray(pixels, "RGB")))
    resized = page.evaluate(
        """async ([data, width, height]) => {
            const { resizeLikeServer } = await import("/static/js/resample.js");
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const out = resizeLikeServer(bytes, width, height, 224, 224).pixels;
            return btoa(Array.from(out, (b) => String.fromCharCode(b)).join(""));
        }""",
        [base64.b64encode(pixels.tobytes()).decode(), size[0], size[1]],
    )
    got = np.frombuffer(base64.b64decode(resized), dtype=np.uint8).reshape(224, 224, 3)
    assert np.array_equal(got, expected), f"{int((got != expected).sum())} bytes differ"


def test_the_browser_feeds_the_model_the_servers_pixels(open_page, server, data_dir):
    """The page's whole preprocessing (browser's JPEG decoder included) against the server's."""
    page = open_page(server)
    differences = []
    for path in one_image_per_class(data_dir)[:4]:
        expected = np.asarray(resize_for_model(decode_image(path.read_bytes())), dtype=np.int16)
        pixels = page.evaluate(
            """async ([data, name]) => {
                const { decodeToRgb, toModelInput } = await import("/static/js/preprocess.js");
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const file = new File([bytes], name, { type: "image/jpeg" });
                return Array.from(toModelInput(await decodeToRgb(file)), (v) => Math.round(v * 255));
            }""",
            [base64.b64encode(path.read_bytes()).decode(), path.name],
        )
        browser = np.array(pixels, dtype=np.int16).reshape(3, 224, 224).transpose(1, 2, 0)
        differences.append(int(np.abs(browser - expected).max()))
    assert max(differences) <= 1, differences  # the decoders may round a colour differently
