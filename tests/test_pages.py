"""The page at / through Flask's test client: it renders, and loads only what the app serves."""

from __future__ import annotations

import json
import re
import struct
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest

from app import create_app

# A URL the browser would fetch from elsewhere: scheme-qualified or protocol-relative.
EXTERNAL_URL = re.compile(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", re.IGNORECASE)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, not a download
JS_IMPORT = re.compile(r"""^import\s.*?from\s+["']([^"']+)["']""", re.MULTILINE)
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")


class PageParser(HTMLParser):
    """Every start tag of a page with its attributes, in document order."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def loaded_urls(self) -> list[str]:
        urls = []
        for tag, attrs in self.elements:
            if tag in ("script", "img") and attrs.get("src"):
                urls.append(attrs["src"])
            if tag == "link" and attrs.get("href"):
                urls.append(attrs["href"])
        return urls

    def root(self) -> dict:
        return next(attrs for tag, attrs in self.elements if tag == "html")

    def by_id(self, element_id: str) -> tuple[str, dict]:
        return next((tag, attrs) for tag, attrs in self.elements if attrs.get("id") == element_id)


def parse(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    return parser


@pytest.fixture
def page(client):
    response = client.get("/")
    assert response.status_code == 200
    return parse(response.get_data(as_text=True))


def fetch_everything_the_page_loads(client, page: PageParser) -> dict[str, str]:
    """Follow the page's scripts, styles and icons, and the modules the scripts import."""
    fetched, pending = {}, [urljoin("/", url) for url in page.loaded_urls()]
    while pending:
        url = pending.pop()
        if url in fetched:
            continue
        response = client.get(url)
        assert response.status_code == 200, f"{url} is not served"
        fetched[url] = response.get_data(as_text=True)
        if url.endswith(".js"):
            assert "javascript" in response.mimetype, f"{url} is served as {response.mimetype}"
            pending += [urljoin(url, target) for target in JS_IMPORT.findall(fetched[url])]
        if url.endswith(".css"):
            assert response.mimetype == "text/css"
            pending += [urljoin(url, target) for target in CSS_URL.findall(fetched[url]) if not target.startswith("data:")]
    return fetched


def test_page_is_html_and_needs_no_model():
    client = create_app({"TESTING": True, "LOAD_MODEL": False}).test_client()
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "<h1>Image classifier</h1>" in response.get_data(as_text=True)


def test_page_loads_only_what_the_app_serves(client, page):
    fetched = fetch_everything_the_page_loads(client, page)
    assert {"/static/app.css", "/static/js/main.js", "/static/js/api.js", "/static/favicon.svg"} <= set(fetched)
    html = client.get("/").get_data(as_text=True)
    for url, text in {"/": html, **fetched}.items():
        external = EXTERNAL_URL.findall(text.replace(SVG_NAMESPACE, ""))
        assert not external, f"{url} refers to {external}"


def test_page_forbids_loading_from_other_origins(client):
    policy = client.get("/").headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    # ... but may send images to an API on another origin (?api=, API_BASE).
    assert "connect-src 'self' http: https:" in policy


def test_page_carries_the_api_base_and_the_upload_limit():
    config = {"TESTING": True, "LOAD_MODEL": False, "MAX_CONTENT_LENGTH": 12345}
    page = parse(create_app(config).test_client().get("/").get_data(as_text=True))
    root = page.root()
    assert root["data-api-base"] == ""  # the page's own origin
    assert root["data-max-upload-bytes"] == "12345"

    config["API_BASE"] = 'https://api.example/"><script>alert(1)</script>'
    html = create_app(config).test_client().get("/").get_data(as_text=True)
    root = parse(html).root()
    assert root["data-api-base"] == config["API_BASE"]  # an attribute value, escaped
    assert "<script>alert(1)" not in html


def test_api_base_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("API_BASE", " https://api.example/ ")
    app = create_app({"TESTING": True, "LOAD_MODEL": False})
    assert app.config["API_BASE"] == "https://api.example"


def test_page_controls_are_labelled_and_results_are_announced(page):
    labels = {attrs.get("for") for tag, attrs in page.elements if tag == "label"}
    inputs = [attrs for tag, attrs in page.elements if tag == "input"]
    assert inputs and all(attrs["id"] in labels for attrs in inputs)
    file_inputs = [attrs for attrs in inputs if attrs["type"] == "file"]
    assert len(file_inputs) == 2 and all(attrs["accept"] == "image/*" for attrs in file_inputs)
    assert page.by_id("on-device")[1]["role"] == "switch"  # a checkbox announced as a switch
    assert page.by_id("camera-input")[1]["capture"] == "environment"
    assert page.by_id("status")[1]["aria-live"] == "polite"
    assert page.by_id("error")[1]["role"] == "alert"
    assert page.root()["lang"] == "en"


def service_worker(config: dict | None = None) -> tuple[object, dict]:
    """GET /sw.js, and the values it was written with (templates/sw.js's first constants)."""
    response = create_app({"TESTING": True, "LOAD_MODEL": False, **(config or {})}).test_client().get("/sw.js")
    values = dict(re.findall(r"^const (VERSION|FILES|MANIFEST) = (.*);", response.get_data(as_text=True), re.MULTILINE))
    return response, {name: json.loads(value) for name, value in values.items()}


def test_the_service_worker_keeps_the_page_and_every_static_file(client, page):
    response, values = service_worker()
    assert response.status_code == 200 and "javascript" in response.mimetype
    assert response.headers["Cache-Control"] == "no-cache"  # a new one is seen on the next visit
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    files = values["FILES"]
    assert files[0] == "/" and set(fetch_everything_the_page_loads(client, page)) <= set(files)
    assert {"/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm", "/static/vendor/tiff/tiff.min.mjs"} <= set(files)
    assert all(client.get(url).status_code == 200 for url in files[1:])
    assert values["MANIFEST"] == "/model.onnx.json"


def test_another_page_makes_another_service_worker():
    _, plain = service_worker()
    assert service_worker()[1]["VERSION"] == plain["VERSION"]  # the same page and files: the same script
    _, other = service_worker({"API_BASE": "https://api.example"})
    assert other["VERSION"] != plain["VERSION"]
    _, without_device = service_worker({"DEVICE_MODEL_PATH": ""})
    assert without_device["MANIFEST"] == "" and without_device["VERSION"] != plain["VERSION"]


def test_the_page_is_an_app_with_a_manifest(client, page):
    link = next(attrs for tag, attrs in page.elements if tag == "link" and attrs.get("rel") == "manifest")
    manifest = client.get(link["href"]).get_json()
    assert (manifest["start_url"], manifest["scope"], manifest["display"]) == ("/", "/", "standalone")
    assert manifest["name"] and manifest["short_name"] and manifest["theme_color"]
    for icon in manifest["icons"]:
        image = client.get(urljoin(link["href"], icon["src"]))
        assert image.status_code == 200 and image.mimetype == icon["type"] == "image/png"
        width, height = struct.unpack(">II", image.data[16:24])
        assert icon["sizes"] == f"{width}x{height}"
    assert {icon["sizes"] for icon in manifest["icons"]} == {"192x192", "512x512"}
