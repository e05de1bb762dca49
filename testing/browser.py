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
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
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
