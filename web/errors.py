"""Every error the service answers, in one table, and the one place that answers them.

Each error is JSON, ``{"error": {"code": ..., "message": ...}}``, with the status this table
gives its code. The app raises: the classifier package its ``InputError`` kinds (a code and
a message, no HTTP status), the web layer ``ApiError``; ``register_error_handlers`` answers
them all here. The front renders nginx's own error pages from the same table
(front/config.py, config/nginx.conf.template), so a client gets the same body whoever answers. Messages may name the
settings they depend on, as ``{MAX_UPLOAD_MB}``; ``message`` fills them in.

Standard library only at import: the front reads the table without loading Flask.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, NamedTuple

log = logging.getLogger(__name__)


# Under this path, errors take the Open Inference Protocol's shape, {"error": "<message>"}.
OPEN_INFERENCE_PREFIX = "/v2/"


class Error(NamedTuple):
    status: int
    message: str  # what to do, for people; a raise may give a more precise one


ERRORS: dict[str, Error] = {
    # Bad input: the classifier's InputError kinds (classifier/errors.py) and the web layer's.
    "bad_request": Error(400, "The request is not valid HTTP. Send a well-formed request."),
    "missing_file": Error(400, "No image sent. Send it in a multipart field named 'file' (curl -F file=@photo.jpg)."),
    "empty_file": Error(400, "The uploaded file is empty."),
    "not_an_image": Error(400, "The file is not an image this service can read."),
    "unreadable": Error(400, "The file cannot be read."),
    "invalid_parameter": Error(400, "A parameter is not valid."),
    "unknown_label": Error(400, "The model has no such class. GET /model lists its classes."),
    "incomplete_body": Error(400, "The request body ended before its Content-Length. Send the whole file."),
    "request_header_too_large": Error(400, "The request headers are too large. Send smaller headers."),
    "unauthorized": Error(401, "This API needs a key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."),
    "not_found": Error(404, "No such route or file. GET /openapi.json lists the routes of this API."),
    "unknown_request_id": Error(404, "No recorded prediction has that request id."),
    "device_model_unavailable": Error(404, "This server offers no copy of its model to browsers."),
    "unknown_model": Error(404, "This server serves no model of that name or version. GET /health names the served model."),
    "method_not_allowed": Error(405, "This route does not accept that method."),
    "request_timeout": Error(408, "The request stopped arriving: nothing came for {CLIENT_TIMEOUT} s. "
                                  "Send the whole body without pausing."),
    "payload_too_large": Error(413, "The upload is larger than the limit of {UPLOAD_LIMIT}. Send a smaller file."),
    "image_too_large": Error(413, "The image has more than {MAX_IMAGE_PIXELS} pixels. Send a smaller image."),
    "too_many_files": Error(413, "More than {MAX_BATCH_FILES} files in one request. Split them over several requests."),
    "uri_too_long": Error(414, "The URL is too long. Send parameters in the body."),
    "unsupported_type": Error(415, "Send multipart/form-data with a field named 'file', or the raw image with an "
                                   "image/* Content-Type."),
    "rate_limited": Error(429, "Too many requests from your address: at most {RATE_LIMIT} a second (bursts of "
                               "{RATE_LIMIT_BURST}) and {CONNECTION_LIMIT} at a time. Wait {RETRY_AFTER} s "
                               "(Retry-After) and try again."),
    # The service's own state.
    "internal_error": Error(500, "The server failed; the error is logged."),
    "bad_gateway": Error(502, "The classifier is restarting. Try again in a few seconds."),
    "service_unavailable": Error(503, "The classifier is restarting. Try again in a few seconds."),
    "model_not_ready": Error(503, "The model is still loading; retry shortly."),
    "database_unavailable": Error(503, "The monitoring database is not answering; retry shortly."),
    "gateway_timeout": Error(504, "The classifier took too long to answer. Try again, or send a smaller image."),
}


class ApiError(Exception):
    """An answer from the table, raised by a view: its code, and a more precise message if it has one."""

    def __init__(self, code: str, message: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message or ERRORS[code].message)
        self.code, self.message, self.headers = code, message or ERRORS[code].message, dict(headers or {})


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def retry_after(settings: Mapping) -> int:
    """Seconds after which a client over the rate limit may send again."""
    per_second = settings["RATE_LIMIT"]
    return max(1, math.ceil(1 / per_second)) if per_second else 1


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:g} KB" if size < 1024 * 1024 else f"{size / (1024 * 1024):g} MB"


def message(code: str, settings: Mapping) -> str:
    """The table's message for ``code``, with the values of the settings it names."""
    values = {
        **settings,
        "RATE_LIMIT": f"{settings['RATE_LIMIT']:g}" if settings.get("RATE_LIMIT") else "any number",
        "CONNECTION_LIMIT": settings.get("CONNECTION_LIMIT") or "any number",
        "MAX_IMAGE_PIXELS": f"{settings.get('MAX_IMAGE_PIXELS', 0):,}",
        "RETRY_AFTER": retry_after(settings) if "RATE_LIMIT" in settings else 1,
        # The app's own limit in bytes (tests set it directly), else the setting's.
        "UPLOAD_LIMIT": human_size(settings.get("MAX_CONTENT_LENGTH") or settings.get("MAX_UPLOAD_MB", 0) * 1024 * 1024),
    }
    return ERRORS[code].message.format(**values)


def register_error_handlers(app) -> None:
    """Answer every error raised in ``app`` from the table; anything else is a logged 500."""
    # Imported here: the front reads the table above without loading Flask.
    from flask import request
    from werkzeug.exceptions import ClientDisconnected, HTTPException

    from classifier.errors import InputError, OnnxCopyUnavailable

    from .served_model import ModelNotReady

    def answer(code: str, text: str, headers: Mapping[str, str] | None = None, status: int | None = None):
        # The Open Inference Protocol's clients read its own shape (web/inference_protocol.py).
        body = {"error": text} if request.path.startswith(OPEN_INFERENCE_PREFIX) else error_body(code, text)
        return body, status or ERRORS[code].status, dict(headers or {})

    @app.errorhandler(ApiError)
    @app.errorhandler(InputError)
    def raised(error):
        return answer(error.code, error.message, getattr(error, "headers", None))

    @app.errorhandler(ModelNotReady)
    def not_ready(_error):
        return answer("model_not_ready", ERRORS["model_not_ready"].message)

    @app.errorhandler(OnnxCopyUnavailable)
    def no_device_model(error):
        return answer("device_model_unavailable", error.message)

    @app.errorhandler(ClientDisconnected)
    def incomplete_body(_error):
        # Werkzeug raises this while handling the failed read of the body. Behind the front
        # nginx hands over whole bodies only (and drops a stalled one itself), so this
        # is a body that ended early, sent straight to gunicorn.
        return answer("incomplete_body", ERRORS["incomplete_body"].message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = _CODES.get(error.code) or (error.name or "error").lower().replace(" ", "_").replace("'", "")
        limit = app.config.get("MAX_CONTENT_LENGTH") or 0
        text = message(code, app.config) if code in ERRORS else error.description or error.name
        if error.code == 413 and request.content_length is not None and request.content_length <= limit:
            text = _FORM_TOO_LARGE  # not the body's size: one of Werkzeug's limits on the form's structure
        headers = {"Allow": ", ".join(error.valid_methods)} if error.code == 405 and getattr(error, "valid_methods", None) else {}
        return answer(code, text, headers, status=error.code or 500)

    @app.errorhandler(Exception)
    def unexpected_error(_error: Exception):
        log.exception("unhandled error")
        return answer("internal_error", ERRORS["internal_error"].message)


_FORM_TOO_LARGE = ("The form has too many parts (over 1,000) or a text field over 500 KB. "
                   "Send each image as a file part named 'file'.")
# Werkzeug's statuses whose code is not its name in snake case.
_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
