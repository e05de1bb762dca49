"""A request id on every request, and one JSON access-log line per response.

An incoming ``X-Request-ID`` (from a load balancer or the client) is kept when it looks like
an id, so one id follows a request through every service; otherwise a new one is made. The
response carries it back and the access line records it.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-ID"
# Ids are copied into logs and headers: accept only short, printable, quote-free ones.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")

log = logging.getLogger("web.access")


def request_id() -> str:
    """This request's id: the caller's, if it is a valid one, else a new uuid4 (hex)."""
    if "request_id" not in g:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if REQUEST_ID_PATTERN.fullmatch(incoming) else uuid.uuid4().hex
    return g.request_id


def init_app(app: Flask) -> None:
    @app.before_request
    def start_access_record():
        g.access_started = time.perf_counter()
        request_id()

    @app.after_request
    def write_access_record(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id()
        started = g.get("access_started")
        elapsed_ms = (time.perf_counter() - started) * 1000 if started else None
        log.info(
            "%s %s %s", request.method, request.path, response.status_code,
            extra={"fields": access_fields(response, elapsed_ms)},
        )
        return response


def access_fields(response: Response, elapsed_ms: float | None) -> dict:
    return {
        "request_id": request_id(),
        "method": request.method,
        "path": request.path,
        "route": request.url_rule.rule if request.url_rule else None,
        "status": response.status_code,
        "duration_ms": None if elapsed_ms is None else round(elapsed_ms, 2),
        "request_bytes": request.content_length,
        "response_bytes": response.calculate_content_length(),
        "remote_addr": request.remote_addr,
        "user_agent": request.user_agent.string or None,
        "pid": os.getpid(),
    }
