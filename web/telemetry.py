"""What the service tells its operator about every request: an id, one JSON log line, metrics.

- A request id: an incoming ``X-Request-ID`` (from a load balancer or the client) is kept when
  it looks like an id, so one id follows a request through every service; otherwise a new
  one is made. The response carries it back, and the access line and the prediction records
  name it.
- One JSON access-log line per response (``JsonFormatter``; gunicorn.conf.py routes the
  ``web.access`` logger through it).
- Prometheus metrics, scraped at ``GET /metrics``. Under gunicorn every worker is its own
  process, so prometheus-client runs in multiprocess mode: the front (front/start.py) sets
  PROMETHEUS_MULTIPROC_DIR, each worker writes to files there and a scrape sums them,
  whichever worker answers it; gunicorn.conf.py lets go of a worker that exits. Without it
  (tests, ``flask run``) the usual in-process registry is used.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
import uuid

from flask import Flask, Response, current_app, g, request
from flask_smorest import Blueprint
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUEST_ID_HEADER = "X-Request-ID"
# Ids are copied into logs and headers: accept only short, printable, quote-free ones.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")

access_log = logging.getLogger("web.access")

# Latencies here run from a few milliseconds (a thumbnail) to seconds (a queue under load).
_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("http_requests", "HTTP requests answered, by route and status.",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram("http_request_duration_seconds",
                            "Time from the request reaching Flask to its response, by route.",
                            ["method", "route"], buckets=_BUCKETS)
IN_FLIGHT = Gauge("http_requests_in_flight", "Requests being handled now, all workers together.",
                  multiprocess_mode="livesum")
INFERENCE_SECONDS = Histogram("model_inference_duration_seconds",
                              "Time of one forward pass of the model (one batch).", buckets=_BUCKETS)
INFERENCE_IMAGES = Counter("model_inference_images", "Images that went through the model.")
# Info metrics do not work in multiprocess mode: a gauge set to 1 with the labels does.
MODEL_INFO = Gauge("model_info", "The model being served (value 1).", ["name", "version"],
                   multiprocess_mode="livemax")

metrics = Blueprint("metrics", __name__, description="Prometheus metrics")

# app.extensions key: functions that return more exposition text, computed at scrape time
# (web/monitoring.py: figures from the database every worker shares).
SCRAPE_EXTRAS = "metrics_scrape_extras"
# app.extensions key: functions called before a scrape counts (web/records.py's flush).
SCRAPE_PREPARE = "metrics_scrape_prepare"


def request_id() -> str:
    """This request's id: the caller's, if it is a valid one, else a new uuid4 (hex)."""
    if "request_id" not in g:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if REQUEST_ID_PATTERN.fullmatch(incoming) else uuid.uuid4().hex
    return g.request_id


@metrics.get("/metrics")
@metrics.alt_response(200, schema={"type": "string"}, content_type="text/plain",
                      description="Prometheus text exposition format", success=True)
def scrape():
    """Prometheus metrics"""
    for prepare in current_app.extensions.get(SCRAPE_PREPARE, ()):
        prepare()
    body = generate_latest(_registry())
    for extra in current_app.extensions.get(SCRAPE_EXTRAS, ()):
        body += extra()
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _registry():
    if current_app.config["PROMETHEUS_MULTIPROC_DIR"]:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=current_app.config["PROMETHEUS_MULTIPROC_DIR"])
        return registry
    return REGISTRY


def observe_inference(seconds: float, images: int) -> None:
    """Called by the classifier after each forward pass."""
    INFERENCE_SECONDS.observe(seconds)
    INFERENCE_IMAGES.inc(images)


_current_model: tuple[str, str] | None = None


def set_model_info(name: str, version: str) -> None:
    """Publish which model this worker serves; a swapped-out model's line drops to 0."""
    global _current_model
    if _current_model and _current_model != (name, version):
        MODEL_INFO.labels(*_current_model).set(0)
    MODEL_INFO.labels(name, version).set(1)
    _current_model = (name, version)


def init_app(app: Flask) -> None:
    """The request id, access line and request metrics on every request of ``app``."""

    @app.before_request
    def start_request():
        g.started = time.perf_counter()
        IN_FLIGHT.inc()
        request_id()

    @app.after_request
    def end_request(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id()
        route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label set
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("started")
        elapsed = None if started is None else time.perf_counter() - started
        if elapsed is not None:
            REQUEST_SECONDS.labels(request.method, route).observe(elapsed)
        access_log.info("%s %s %s", request.method, request.path, response.status_code,
                        extra={"fields": access_fields(response, elapsed)})
        return response

    @app.teardown_request
    def leave_request(_error=None):
        # Only if this request was counted in: another before_request hook may have
        # answered first, and then ours did not run.
        if g.pop("started", None) is not None:
            IN_FLIGHT.dec()


def access_fields(response: Response, elapsed: float | None) -> dict:
    return {
        "request_id": request_id(),
        "method": request.method,
        "path": request.path,
        "route": request.url_rule.rule if request.url_rule else None,
        "status": response.status_code,
        "duration_ms": None if elapsed is None else round(elapsed * 1000, 2),
        "request_bytes": request.content_length,
        "response_bytes": response.calculate_content_length(),
        "remote_addr": request.remote_addr,
        "user_agent": request.user_agent.string or None,
        "pid": os.getpid(),
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines: ``{"time", "level", "logger", "message", ...}``
    plus the record's ``fields`` mapping."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
