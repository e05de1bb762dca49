"""The page in a real browser: Debian's Chromium, driven by Playwright, against the Procfile server.

One gunicorn (the Procfile's web command) serves the API and the page; small in-process
servers of the same app, without a model, serve the page from other origins (other ports).
The API's CORS_ORIGINS lists one of them, so the same page classifies from that origin and
is refused from another: CORS is what makes the cross-origin call work.
"""

from __future__ import annotations

import json
import re
import struct
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError


from testing.browser import CHOOSE, DESKTOP, PHONE, SCREENSHOTS, page_server
from testing.multipart import post_files
from testing.samples import model_answer
from testing.servers import free_port, procfile_server

pytestmark = pytest.mark.slow

TEXT_FILE = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"Shopping list: eggs, flour, milk.\n" * 20}

# A shared machine can be slow to answer; no test asserts timings.
expect.set_options(timeout=30_000)


@dataclass(frozen=True)
class Servers:
    api: str  # gunicorn from the Procfile: the API and the page, with the model
    allowed: str  # the page alone, another origin, listed in the API's CORS_ORIGINS, data-api-base = api
    other: str  # the page alone, an origin the API does not list, no model of its own
    small_limit: str  # the page alone, with a 16 KB upload limit


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    allowed_port = free_port()
    cors = {"CORS_ORIGINS": f"http://127.0.0.1:{allowed_port}"}
    log = tmp_path_factory.mktemp("browser") / "gunicorn.log"
    # The pages alone offer no device model: when their API fails, no browser copy answers instead.
    alone = {"DEVICE_MODEL_PATH": ""}
    with procfile_server(env=cors, log_path=log) as (api, _), ExitStack() as stack:
        yield Servers(
            api=api,
            allowed=stack.enter_context(page_server(allowed_port, API_BASE=api, **alone)),
            other=stack.enter_context(page_server(**alone)),
            small_limit=stack.enter_context(page_server(MAX_CONTENT_LENGTH=16 * 1024, **alone)),
        )


@pytest.fixture(scope="module")
def model(servers) -> dict:
    with urllib.request.urlopen(f"{servers.api}/model") as response:
        return json.load(response)


@dataclass
class Visit:
    page: Page
    requests: list[str]
    errors: list[str]


@pytest.fixture
def open_page(browser, servers):
    """Open a page; afterwards, check it raised no script error and fetched only from our servers."""
    visits: list[Visit] = []

    def open_(url: str, device: dict = DESKTOP) -> Page:
        context = browser.new_context(**device)
        page = context.new_page()
        visit = Visit(page, [], [])
        page.on("request", lambda request: visit.requests.append(request.url))
        page.on("pageerror", lambda error: visit.errors.append(str(error)))
        page.goto(url)
        expect(page.locator("html")).to_have_attribute("data-ready", "true")  # main.js ran
        visits.append(visit)
        return page

    yield open_
    ours = {origin(url) for url in (servers.api, servers.allowed, servers.other, servers.small_limit)}
    for visit in visits:
        visit.page.context.close()
        assert not visit.errors, visit.errors
        elsewhere = [url for url in visit.requests if not url.startswith(("blob:", "data:")) and origin(url) not in ours]
        assert not elsewhere, f"the page fetched from elsewhere: {elsewhere}"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def status(page: Page):
    return page.get_by_role("status")


def scores(page: Page):
    return page.get_by_role("list", name="Top classes").get_by_role("listitem")


def history(page: Page):
    return page.get_by_role("list", name="History").get_by_role("button")


def api_answer(servers: Servers, path: Path) -> dict:
    code, body = post_files(f"{servers.api}/predict", [(path.name, path.read_bytes())])
    assert code == 200, body
    return json.loads(body)


def answered(path: Path) -> re.Pattern:
    """The page's status once ``path`` is classified: its name and the shipped model's own answer."""
    return re.compile(rf"^{re.escape(path.name)}: {re.escape(model_answer(path)['label'])}, ")


def percent(score: float) -> str:
    return "<0.1%" if 0 < score < 0.001 else f"{score * 100:.1f}%"


def first_images(data_dir: Path, count: int) -> list[Path]:
    """One image of each of the first ``count`` classes, in class order."""
    classes = sorted(path for path in (data_dir / "ucmerced").iterdir() if path.is_dir())
    return [folder / f"{folder.name}00.jpg" for folder in classes[:count]]


def png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


# --- The page, same origin, against gunicorn -----------------------------------------------


def test_a_data_set_image_gets_its_label_scores_and_time(open_page, servers, model, dataset_jpeg):
    page = open_page(servers.api)
    expect(page.locator("#model-info")).to_have_text(f"Model {model['name']} {model['version']} · {len(model['labels'])} classes")

    page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)

    answer = api_answer(servers, dataset_jpeg)
    assert answer["label"] == model_answer(dataset_jpeg)["label"]
    expect(status(page)).to_have_text(f"airplane00.jpg: {answer['label']}, {percent(answer['score'])}.")
    expect(scores(page)).to_have_text([re.compile(f"^{e['label']}\\s*{re.escape(percent(e['score']))}$") for e in answer["top"]])
    which = re.escape(f" · model {model['name']} {model['version']}")
    expect(page.locator("#timing")).to_have_text(re.compile(rf"^Answered by the server in (\d+ ms|\d+\.\d s){which}$"))
    expect(page.get_by_role("img", name="Preview of airplane00.jpg")).to_be_visible()
    bar_widths = page.locator(".score .fill").evaluate_all("fills => fills.map(f => f.getBoundingClientRect().width)")
    # The best class's bar shows its score (half of it at least: it may still be growing).
    assert bar_widths[0] > 0.5 * answer["score"] * page.locator(".score .bar").first.bounding_box()["width"]
    assert bar_widths == sorted(bar_widths, reverse=True)


def test_a_text_file_gets_an_error_in_words(open_page, servers):
    page = open_page(servers.api)
    with page.expect_response(re.compile(r"/predict$")) as response:
        page.get_by_label(CHOOSE).set_input_files(files=TEXT_FILE)
    assert response.value.status == 400 and response.value.json()["error"]["code"] == "not_an_image"

    alert = page.get_by_role("alert")
    expect(alert).to_have_text("This file is not an image the classifier can read. Choose a picture: JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC.")
    expect(status(page)).to_have_text("Could not classify notes.txt.")
    expect(scores(page)).to_have_count(0)
    expect(history(page).first).to_contain_text("Not classified")


def test_images_in_a_row_form_a_history_newest_first(open_page, servers, data_dir):
    page = open_page(servers.api)
    images = first_images(data_dir, 8)
    page.get_by_label(CHOOSE).set_input_files(images)  # several at once: classified in turn

    expect(history(page)).to_have_count(len(images))
    expect(history(page)).to_contain_text([re.compile(rf"·\s*\d+\.\d%.*{path.name}") for path in reversed(images)])
    listing = page.get_by_role("list", name="History")
    assert listing.evaluate("list => list.scrollHeight > list.clientHeight")  # it scrolls

    oldest = history(page).last
    oldest.scroll_into_view_if_needed()
    oldest.click()
    expect(oldest).to_have_attribute("aria-current", "true")
    expect(status(page)).to_have_text(re.compile(rf"^{images[0].name}: {api_answer(servers, images[0])['label']}, "))
    expect(page.get_by_role("img", name=f"Preview of {images[0].name}")).to_be_visible()
    expect(history(page).first).not_to_have_attribute("aria-current", "true")


def test_an_image_can_be_dropped_or_pasted(open_page, servers, data_dir, dataset_jpeg):
    page = open_page(servers.api)
    beach = data_dir / "ucmerced" / "beach" / "beach00.jpg"

    def transfer(path: Path):
        return page.evaluate_handle(
            """([name, bytes]) => {
                const transfer = new DataTransfer();
                transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
                return transfer;
            }""",
            [path.name, list(path.read_bytes())],
        )

    page.locator("#dropzone").dispatch_event("drop", {"dataTransfer": transfer(dataset_jpeg)})
    expect(status(page)).to_have_text(answered(dataset_jpeg))

    page.evaluate("transfer => document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: transfer}))", transfer(beach))
    expect(status(page)).to_have_text(re.compile(rf"^beach00\.jpg: {api_answer(servers, beach)['label']}, "))
    expect(history(page)).to_have_count(2)


def open_chooser_by_keyboard(page: Page, attempts: int = 3):
    """Press Space on the focused file input, as a person would, and return the chooser.

    Headless Chromium now and then drops the chooser a key press asks for (about one run in
    ten here, with no error anywhere); a person would press again, and so does this.
    """
    for attempt in range(1, attempts + 1):
        try:
            with page.expect_file_chooser(timeout=5000) as chooser_opened:
                page.keyboard.press("Space")  # a file input is a button: Space opens it
            return chooser_opened.value
        except PlaywrightTimeoutError:
            if attempt == attempts:
                raise


def test_keyboard_and_screen_reader_can_use_it(open_page, servers, dataset_jpeg):
    page = open_page(servers.api)
    expect(page.locator("#classes-box")).to_be_visible()  # the model answered: its classes are listed
    chooser = page.get_by_label(CHOOSE)

    page.keyboard.press("Tab")
    expect(chooser).to_be_focused()
    outline = page.locator("label[for=file-input]").evaluate("label => getComputedStyle(label).outlineStyle")
    assert outline == "solid"  # focus is visible on the button the person sees
    open_chooser_by_keyboard(page).set_files(dataset_jpeg)
    expect(status(page)).to_have_text(answered(dataset_jpeg))
    expect(chooser).to_be_focused()  # the result is announced; focus stays where the person is

    chooser.set_input_files(files=TEXT_FILE)
    expect(page.get_by_role("alert")).to_contain_text("not an image")

    page.keyboard.press("Tab")
    on_device = page.get_by_role("switch", name="On this device")
    expect(on_device).to_be_focused()
    outline = page.locator("label[for=on-device]").evaluate("label => getComputedStyle(label, '::before').outlineStyle")
    assert outline == "solid"  # its focus shows on the switch the person sees
    page.keyboard.press("Space")
    expect(on_device).to_be_checked()
    page.keyboard.press("Space")
    expect(on_device).not_to_be_checked()  # back to the server for what follows

    page.keyboard.press("Tab")
    expect(page.get_by_role("switch", name="Share this browser's answers")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_text("What it can recognise")).to_be_focused()
    page.keyboard.press("Tab")
    expect(history(page).first).to_be_focused()  # newest: the text file
    page.keyboard.press("Tab")
    expect(history(page).nth(1)).to_be_focused()
    page.keyboard.press("Enter")
    expect(status(page)).to_have_text(answered(dataset_jpeg))
    expect(page.locator("#error")).to_be_empty()  # the alert is cleared (and hidden, so not by role)

    for name in ("Your image", "Result", "History"):
        expect(page.get_by_role("region", name=name)).to_be_visible()
    expect(status(page)).to_have_attribute("aria-live", "polite")


@pytest.mark.parametrize("device_name, device", [("desktop", DESKTOP), ("phone", PHONE)])
def test_layout_fits_the_width_and_screenshot(open_page, servers, data_dir, device_name, device):
    page = open_page(servers.api, device)
    images = first_images(data_dir, 3)
    page.get_by_label(CHOOSE).set_input_files(images)
    expect(history(page)).to_contain_text([re.compile(r"\d+\.\d%") for _ in images])

    width = device["viewport"]["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    panels = [page.get_by_role("region", name=name).bounding_box() for name in ("Your image", "Result", "History")]
    if device_name == "phone":
        assert all(upper["y"] + upper["height"] <= lower["y"] for upper, lower in zip(panels, panels[1:]))
        expect(page.get_by_label("Take a photo")).to_be_attached()
        expect(page.locator("label[for=camera-input]")).to_be_visible()
    else:
        assert [panel["y"] for panel in panels] == [panels[0]["y"]] * 3  # three columns
        expect(page.locator("label[for=camera-input]")).to_be_hidden()
    for panel in panels:
        assert panel["x"] >= 0 and panel["x"] + panel["width"] <= width

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"page-{device_name}.png"
    # The whole page, by growing the viewport to fit it: a full_page screenshot would drop the
    # phone's touch emulation, and with it the "Take a photo" button.
    page.set_viewport_size({"width": width, "height": page.evaluate("document.documentElement.scrollHeight")})
    if device_name == "phone":
        expect(page.locator("label[for=camera-input]")).to_be_visible()
    page.screenshot(path=path)
    assert png_size(path)[0] == width * device.get("device_scale_factor", 1)


# --- Across origins: CORS ------------------------------------------------------------------


def test_page_from_another_origin_classifies_through_cors(open_page, servers, model, dataset_jpeg):
    page = open_page(servers.allowed)  # its data-api-base names the gunicorn server
    assert origin(servers.allowed) != origin(servers.api)
    expect(page.locator("#model-info")).to_contain_text(model["name"])

    with page.expect_response(f"{servers.api}/predict") as response:
        page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
    assert response.value.status == 200
    assert response.value.headers["access-control-allow-origin"] == servers.allowed
    expect(status(page)).to_have_text(answered(dataset_jpeg))
    expect(page.locator("#api-origin")).to_have_text(urlsplit(servers.api).netloc)


def test_origin_left_out_of_cors_origins_is_refused_in_words(open_page, servers, dataset_jpeg):
    page = open_page(f"{servers.other}/?api={servers.api}")
    page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
    api_host = urlsplit(servers.api).netloc
    expect(page.get_by_role("alert")).to_have_text(
        f"Could not reach the classifier at {api_host}. It may be offline, "
        f"or it may not accept requests from this page ({servers.other})."
    )
    expect(scores(page)).to_have_count(0)


def test_api_query_parameter_wins_and_a_server_without_model_says_so(open_page, servers, dataset_jpeg):
    page = open_page(f"{servers.allowed}/?api={servers.other}")  # a server whose model is not loaded
    expect(page.locator("#model-info")).to_have_text("The classifier is loading its model…")
    with page.expect_response(f"{servers.other}/predict") as response:
        page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
    assert response.value.status == 503
    expect(page.get_by_role("alert")).to_have_text("The classifier is still starting up. Try again in a few seconds.")


def test_an_api_address_that_is_not_a_web_address_is_refused(open_page, servers, dataset_jpeg):
    page = open_page(f"{servers.api}/?api=javascript:alert(1)")
    sentence = 'The API address "javascript:alert(1)" is not a web address (http:// or https://).'
    expect(page.locator("#model-info")).to_have_text(sentence)
    page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
    expect(page.get_by_role("alert")).to_have_text(sentence)


# --- Errors the page catches or translates -------------------------------------------------


def test_a_file_over_the_limit_is_refused_before_uploading(open_page, servers, dataset_jpeg):
    assert dataset_jpeg.stat().st_size > 16 * 1024
    page = open_page(servers.small_limit)
    expect(page.locator("#limits")).to_contain_text("up to 16 KB")
    uploads = []
    page.on("request", lambda request: uploads.append(request.url) if "/predict" in request.url else None)
    page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
    expect(page.get_by_role("alert")).to_have_text("This file is too large: the limit is 16 KB. Choose a smaller image.")
    assert uploads == []


def api_error(status: int, code: str, message: str = "A message for curl users.") -> dict:
    return {"status": status, "json": {"error": {"code": code, "message": message}}}


def test_a_rate_limited_image_is_sent_again_after_retry_after(open_page, servers, dataset_jpeg):
    """The front's 429 (docs/front.md): the page waits as Retry-After says and sends it once more."""
    page = open_page(servers.api)
    calls = []

    def over_the_limit_once(route):
        calls.append(route.request.url)
        if len(calls) == 1:
            route.fulfill(**api_error(429, "rate_limited"), headers={"Retry-After": "1"})
        else:
            route.continue_()

    page.route("**/predict", over_the_limit_once)
    page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
    expect(status(page)).to_have_text(answered(dataset_jpeg))
    assert len(calls) == 2


@pytest.mark.parametrize(
    "reply, sentence",
    [
        (api_error(413, "payload_too_large"), "This file is too large: the limit is 20 MB. Choose a smaller image."),
        (api_error(413, "image_too_large"), "This image has too many pixels for the classifier. Try a smaller copy of it."),
        (api_error(415, "unsupported_type"), "This kind of file is not supported. Choose a JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC image."),
        (api_error(400, "empty_file"), "This file is empty. Choose another image."),
        (api_error(503, "model_not_ready"), "The classifier is still starting up. Try again in a few seconds."),
        (api_error(401, "unauthorized"), "This classifier needs an API key, and this page has none to send. Ask its owner for access, or use the API with its key."),
        (api_error(408, "request_timeout"), "The upload was too slow and the classifier stopped waiting. Check your connection and try again."),
        (api_error(500, "internal_error"), "The classifier failed on this image. Try again, or try another image."),
        ({**api_error(429, "rate_limited"), "headers": {"Retry-After": "3"}}, "Too many images from this address in a short time. Wait 3 seconds and try again."),
        (api_error(429, "rate_limited"), "Too many images from this address in a short time. Wait a second and try again."),
        (api_error(502, "bad_gateway"), "The classifier is restarting. Try again in a few seconds."),
        (api_error(503, "service_unavailable"), "The classifier is restarting. Try again in a few seconds."),
        (api_error(504, "gateway_timeout"), "The classifier took too long to answer. Try again, or try a smaller image."),
        (api_error(400, "bad_request"), "The classifier could not read the request this page sent. Reload the page and try again."),
        (api_error(400, "request_header_too_large"), "The request this page sent was too large for the classifier. Reload the page and try again."),
        (api_error(414, "uri_too_long"), "The API address {api_host} is too long. Check it."),
        (api_error(422, "a_code_added_later", "The server's own sentence."), "The server's own sentence."),
        (
            {"status": 502, "content_type": "text/html", "body": "<pre>Traceback (most recent call last):\n  File ...</pre>"},
            "The classifier is having trouble (HTTP 502). Try again later.",
        ),
        ({"status": 200, "content_type": "text/html", "body": "<html>a captive portal</html>"}, "The classifier sent an answer this page cannot read. Try again later."),
        ("abort", f"Could not reach the classifier at {{api_host}}. It may be offline, or it may not accept requests from this page ({{page_origin}})."),
    ],
    ids=["payload_too_large", "image_too_large", "unsupported_type", "empty_file", "model_not_ready",
         "unauthorized", "request_timeout", "internal_error", "rate_limited_retry_after", "rate_limited",
         "bad_gateway", "service_unavailable", "gateway_timeout", "bad_request", "request_header_too_large", "uri_too_long", "unknown_code", "html_traceback", "not_json", "network"],
)
def test_every_api_error_becomes_a_sentence(open_page, servers, dataset_jpeg, reply, sentence):
    page = open_page(servers.api)
    # No model for this browser either, so the server's own answer is the one shown (the device
    # answering instead: tests/test_browser_offline.py).
    page.route("**/model.onnx.json", lambda route: route.fulfill(**api_error(404, "device_model_unavailable")))
    if reply == "abort":
        page.route("**/predict", lambda route: route.abort("connectionrefused"))
    else:
        page.route("**/predict", lambda route: route.fulfill(**reply))
    page.get_by_label(CHOOSE).set_input_files(dataset_jpeg)
    host = urlsplit(servers.api).netloc
    expect(page.get_by_role("alert")).to_have_text(sentence.format(api_host=host, page_origin=servers.api))
    expect(status(page)).to_have_text("Could not classify airplane00.jpg.")
