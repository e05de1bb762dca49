"""Every error leaves as JSON: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from classifier.errors import InputError

from .served_model import ModelNotReady

log = logging.getLogger(__name__)

# Messages a person can act on, for the errors Werkzeug raises before our views run.
_HTTP_MESSAGES = {
    404: "No such route. GET /openapi.json lists the routes of this API.",
    405: "This route does not accept that method.",
    413: "The upload is larger than the limit of {limit}. Send a smaller file.",
}


_FORM_TOO_LARGE = (
    "The form has too many parts (over 1,000) or a text field over 500 KB. "
    "Send each image as a file part named 'file'."
)


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str):
    response = jsonify(error_body(code, message))
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    def reply(error: InputError | ModelNotReady):  # each carries its status, code and message
        return error_response(error.status, error.code, error.message)

    app.register_error_handler(InputError, reply)
    app.register_error_handler(ModelNotReady, reply)

    @app.errorhandler(ClientDisconnected)
    def incomplete_body(error: ClientDisconnected):
        # Werkzeug raises this while handling the failed read of the body. Behind the front
        # nginx hands over whole bodies only (and drops a stalled one itself), so this
        # is a body that ended early, sent straight to gunicorn.
        return error_response(
            400,
            "incomplete_body",
            "The request body ended before its Content-Length. Send the whole file.",
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        limit = app.config.get("MAX_CONTENT_LENGTH") or 0
        template = _HTTP_MESSAGES.get(error.code, error.description or error.name)
        if error.code == 413 and request.content_length is not None and request.content_length <= limit:
            # Not the body's size: one of Werkzeug's limits on the form's structure.
            template = _FORM_TOO_LARGE
        message = template.format(limit=human_size(limit))
        response = error_response(error.code or 500, _code_for(error), message)
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "The server failed; the error is logged.")


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:g} KB"
    return f"{size / (1024 * 1024):g} MB"


def _code_for(error: HTTPException) -> str:
    names = {413: "payload_too_large"}
    if error.code in names:
        return names[error.code]
    return (error.name or "error").lower().replace(" ", "_").replace("'", "")
