"""The browser page: GET / renders templates/index.html; its JS and CSS are in static/."""

from __future__ import annotations

from flask import current_app, render_template

from .api_spec import Blueprint

pages = Blueprint("pages", __name__, description="The browser page")

# Everything the page loads comes from this app ('self'); it sends images to the API, which
# may be another origin (?api=, API_BASE), so fetch may go to any http(s) origin. Previews
# are blob: URLs of the chosen files. The "On this device" path compiles onnxruntime-web's
# WebAssembly, which needs 'wasm-unsafe-eval' (it allows compiling WebAssembly, not eval).
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


@pages.after_request
def add_security_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
