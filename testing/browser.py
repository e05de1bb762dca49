"""Debian's Chromium driven by Playwright, and the page served by the app in a thread, for the
browser tests."""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path

from . import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the background-networking switches Chromium keeps trying to reach Google's
# services and hangs on a network without internet; no GPU on a CI machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = ROOT / "test-results" / "screenshots"
# The page's service worker downloads the device model and onnxruntime-web on a first visit
# (templates/sw.js); tests of the page itself leave it out, and use page.route, which does not
# see what a service worker fetches. tests/test_browser_offline.py tests it: ``KEEPING``.
DESKTOP = {"viewport": {"width": 1280, "height": 800}, "service_workers": "block"}
PHONE = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True,
         "service_workers": "block"}
KEEPING = {**DESKTOP, "service_workers": "allow"}
# axe-core, the accessibility checker (vendored for the tests only by `make vendor`).
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
# The page's file chooser, by its label.
CHOOSE = re.compile("Choose images")


@contextmanager
def chromium():
    """A headless Chromium for as long as the block runs."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"No Chromium at {CHROMIUM}: `make test` installs it (apt-get install chromium)."
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_server(port: int = 0, **config):
    """The app without a model, serving the page on a loopback port in a thread."""
    from werkzeug.serving import make_server

    from app import create_app

    app = create_app({"LOAD_MODEL": False, **config})
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def accessibility_violations(page) -> list[dict]:
    """What axe-core finds wrong on the page as it is now (WCAG A and AA, and best practice)."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text())  # evaluated by the test, so the page's CSP does not apply
    return page.evaluate("""async () => (await axe.run(document)).violations.map((v) => ({
        id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")) }))""")
