"""The browser page: GET / renders templates/index.html; its JS and CSS are in static/.

GET /sw.js is the page's service worker (templates/sw.js): it keeps the page, everything in
static/ and the device model in the browser, so the page opens and classifies on the device
with no network (docs/page.md). It is served from / because a service worker controls only
the paths under its own.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from flask import current_app, render_template, url_for

from .api_spec import Blueprint

pages = Blueprint("pages", __name__, description="The browser page")

# Everything the page loads comes from this app ('self'); it sends images to the API, which
# may be another origin (?api=, API_BASE), so fetch may go to any http(s) origin. Previews
# are blob: URLs of the chosen files. The "On this device" path compiles onnxruntime-web's
# WebAssembly, which needs 'wasm-unsafe-eval' (it allows compiling WebAssembly, not eval).
# The service worker and the web app manifest are 'self' too (worker-src, manifest-src).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "connect-src 'self' http: https:",
        "img-src 'self' blob: data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


@pages.get("/")
@pages.alt_response(200, schema={"type": "string"}, content_type="text/html", description="HTML",
                    success=True)
def index():
    """The browser page"""
    return render_template(
        "index.html",
        api_base=current_app.config["API_BASE"],
        max_upload_bytes=current_app.config["MAX_CONTENT_LENGTH"],
        device_model=bool(current_app.config["DEVICE_MODEL_PATH"]),
    )


@pages.get("/sw.js")
@pages.alt_response(200, schema={"type": "string"}, content_type="application/javascript",
                    description="JavaScript", success=True)
def service_worker():
    """The page's service worker, which keeps it for use with no network"""
    files, digest = static_files(current_app.static_folder, url_for("static", filename=""))
    # A new page, a new static file or another setting makes another script, and a browser
    # replaces its copies when the script changes.
    version = hashlib.sha256(digest.encode() + index().encode()).hexdigest()[:16]
    manifest = url_for("device.manifest") if current_app.config["DEVICE_MODEL_PATH"] else ""
    script = render_template("sw.js", version=version, files=[url_for("pages.index"), *files],
                             manifest=manifest)
    return script, 200, {"Content-Type": "application/javascript; charset=utf-8", "Cache-Control": "no-cache"}


@functools.lru_cache(maxsize=4)
def static_files(folder: str, prefix: str) -> tuple[list[str], str]:
    """The URL of every file in static/, and a hash of their contents (read once per process)."""
    names = sorted(path.relative_to(folder).as_posix() for path in Path(folder).rglob("*") if path.is_file())
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + hashlib.sha256((Path(folder) / name).read_bytes()).digest())
    return [prefix + name for name in names], digest.hexdigest()


@pages.after_request
def add_security_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
