"""Prometheus metrics for the service, and ``GET /metrics`` to scrape them.

Under gunicorn every worker is its own process, so prometheus-client runs in multiprocess
mode: the front (front/start.py) sets PROMETHEUS_MULTIPROC_DIR, each worker writes to files
there and a scrape sums them, whichever worker answers it; gunicorn.conf.py lets go of a
worker that exits. Without it (tests, ``flask run``) the usual in-process registry is used.
"""

from __future__ import annotations

import time

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
# app.extensions key: functions called before a scrape counts (web/recording.py's flush).
SCRAPE_PREPARE = "metrics_scrape_prepare"


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
    @app.before_request
    def start_request_metrics():
        g.metrics_started = time.perf_counter()
        IN_FLIGHT.inc()

    @app.after_request
    def record_request_metrics(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label set
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            REQUEST_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def end_request_metrics(_error=None):
        # Only if this request was counted in: another before_request hook may have
        # answered first, and then ours did not run.
        if g.pop("metrics_started", None) is not None:
            IN_FLIGHT.dec()
