"""The browser's form of the model: GET /model.onnx.json (its manifest) and GET /model.onnx.

The page's "On this device" path downloads these from the page's own origin and runs the
model with onnxruntime-web. The form is DEVICE_MODEL_PATH, ``model-browser.onnx``: the
smallest ONNX form of the served model that gives its answers on the validation split
(``training.variants``); its manifest says which form and why. Both answer 404 with the
reason when there is no form whose manifest names the served model (``classifier.onnx_copy``),
or when DEVICE_MODEL_PATH is empty.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from flask import Response, current_app, jsonify, request, send_file, url_for
from marshmallow import fields

from classifier.errors import OnnxCopyUnavailable
from classifier.onnx_copy import OnnxCopy, matching_onnx_copy

from .api_spec import Blueprint, Schema

device = Blueprint("device", __name__, description="The model for the browser")
log = logging.getLogger(__name__)


class Manifest(Schema):
    form = fields.String(metadata={"description": "fp32, fp16 or int8; evidence.why says why this one"})
    labels = fields.List(fields.String(), required=True)
    sha256 = fields.String(required=True)
    url = fields.String(required=True)


@device.record_once
def say_whether_browsers_get_the_model(state) -> None:
    """Log at start-up why browsers cannot run the model, if they cannot; never stop the API."""
    with state.app.app_context():
        try:
            current_device_model()
        except OnnxCopyUnavailable as reason:
            log.warning("'On this device' is off: %s", reason.message)


def current_device_model() -> OnnxCopy:
    path = current_app.config["DEVICE_MODEL_PATH"]
    if not path:
        raise OnnxCopyUnavailable("This server does not offer its model to browsers (DEVICE_MODEL_PATH is empty).")
    return matching_onnx_copy(path, current_app.config["MODEL_PATH"])


@device.get("/model.onnx.json")
@device.response(200, Manifest, description="Labels, form, hash and URL of the browser's model.")
@device.errors("device_model_unavailable")
def manifest():
    """The manifest of the model's form for browsers, which the page runs on the device"""
    model = current_device_model()
    return jsonify({**model.manifest, "url": url_for("device.onnx_file")})


@device.get("/model.onnx")
@device.response(200, {"type": "string", "format": "binary"}, content_type="application/octet-stream",
                 description="The ONNX file.")
@device.errors("device_model_unavailable")
def onnx_file():
    """The served model's form for browsers (ONNX), for onnxruntime-web"""
    model = current_device_model()
    handed_over = hand_to_front(model.path)
    if handed_over is not None:
        return handed_over
    # The ETag is the file's hash: a browser revalidates and downloads it again only when
    # the model changed.
    response = send_file(
        model.path.resolve(),
        mimetype="application/octet-stream",
        conditional=True,
        etag=model.manifest["sha256"],
        max_age=0,
    )
    response.headers["Cache-Control"] = "no-cache"
    return response


def hand_to_front(path: Path) -> Response | None:
    """Let nginx send the checked file (X-Accel-Redirect), so a slow download holds no worker.

    Rack::Sendfile's convention: nginx asks for it with ``X-Sendfile-Type: X-Accel-Redirect``
    and ``X-Accel-Mapping: <directory>/=<internal prefix>/`` (config/nginx.conf.template,
    which drops a client's own copy of both). Without them, or for a file outside that
    directory, None: the app sends the file itself.
    """
    if request.headers.get("X-Sendfile-Type") != "X-Accel-Redirect":
        return None
    directory, _, prefix = request.headers.get("X-Accel-Mapping", "").partition("=")
    resolved = str(path.resolve())
    if not directory or not prefix or not resolved.startswith(directory.rstrip("/") + "/"):
        return None
    response = Response(mimetype="application/octet-stream")
    # nginx answers conditional and range requests with the file's own ETag and Last-Modified.
    relative = resolved[len(directory.rstrip("/")) + 1:]
    response.headers["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + quote(relative)
    return response
