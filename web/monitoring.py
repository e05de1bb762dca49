"""Watching the served model: POST /feedback, GET /monitoring, their figures in /metrics, and
``flask --app app export-feedback DIR``.

The figures come from the monitoring database (web/db.py), which every gunicorn worker
shares, so whichever worker answers, it answers for the whole server. docs/monitoring.md
describes every field.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from datetime import timedelta
from pathlib import Path

import click
from flask import Blueprint, Flask, current_app, jsonify, request
from flask.cli import with_appcontext
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import and_, case, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from classifier.drift import REFERENCE_KEY, drift_score, reference_distribution
from classifier.errors import InvalidParameter

from . import db, metrics, recording
from .access_log import REQUEST_ID_PATTERN
from .api import query_value
from .auth import api_key_required
from .errors import ApiError
from .served_model import get_classifier, loaded_classifier
from .settings import parse_duration

log = logging.getLogger(__name__)

monitoring = Blueprint("monitoring", __name__)

MAX_ITEM = 10_000
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@monitoring.post("/feedback")
@api_key_required
def feedback():
    classifier = get_classifier()
    request_id, item, label = read_feedback(classifier.labels)
    try:
        recording.flush()  # this worker's queued records: a prediction it answered just now
        outcome = db.run(lambda connection: give_feedback(connection, request_id, item, label))
        if outcome is None:
            # Another worker may hold the record in its queue: it writes it within a flush
            # interval (docs/monitoring.md), so look once more after two of them.
            time.sleep(2 * current_app.config["RECORD_FLUSH_MS"] / 1000)
            outcome = db.run(lambda connection: give_feedback(connection, request_id, item, label))
    except SQLAlchemyError as error:
        log.error("feedback for %s not recorded: %s", request_id, db.error_reason(error))
        raise ApiError("database_unavailable") from None
    if outcome is None:
        raise ApiError(
            "unknown_request_id",
            f"No recorded prediction has request id {request_id!r}"
            + (f" and item {item}" if item else "")
            + ". Send the X-Request-ID header of the answer you are correcting; predictions "
            f"older than {current_app.config['RETENTION_DAYS']} days are no longer kept.",
        )
    return jsonify(outcome)


def read_feedback(labels: tuple[str, ...]) -> tuple[str, int, str]:
    """``{"request_id": str, "label": str, "item": int (optional)}`` from the body, checked."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidParameter(
            'Send a JSON object: {"request_id": "<the X-Request-ID of the answer>", "label": "<the right class>"}.'
        )
    request_id, label, item = body.get("request_id"), body.get("label"), body.get("item", 0)
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidParameter(
            "'request_id' must be the X-Request-ID header of the answer: 1 to 128 letters, digits or ._:+/=-"
        )
    if not isinstance(label, str) or not label:
        raise InvalidParameter("'label' must be the right class, as a string.")
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_ITEM:
        raise InvalidParameter(f"'item' must be the image's place in its batch, from 0 to {MAX_ITEM}.")
    if label not in labels:
        raise UnknownLabel(label)
    return request_id, item, label


class UnknownLabel(InvalidParameter):
    code = "unknown_label"

    def __init__(self, label: str):
        super().__init__(f"The model has no class {label!r}. GET /model lists its classes.")


def give_feedback(connection, request_id: str, item: int, label: str) -> dict | None:
    """Store ``label`` as the right class of a prediction; None if there is no such prediction.

    A later answer for the same prediction replaces the earlier one (people correct
    themselves); ``feedback_count`` keeps how many answers it had.
    """
    table = db.predictions
    where = and_(table.c.request_id == request_id, table.c.item == item)
    row = connection.execute(select(table.c.label, table.c.feedback_label).where(where)).first()
    if row is None:
        return None
    connection.execute(
        update(table).where(where).values(
            feedback_label=label, feedback_at=db.utcnow(), feedback_count=table.c.feedback_count + 1
        )
    )
    return {
        "request_id": request_id,
        "item": item,
        "label": label,
        "predicted": row.label,
        "correct": row.label == label,
        "replaced": row.feedback_label,
    }


@monitoring.get("/monitoring")
def monitoring_report():
    classifier = get_classifier()
    raw = query_value("window") or current_app.config["MONITORING_WINDOW"]
    try:
        seconds = parse_duration(raw)
    except ValueError as error:
        raise InvalidParameter(f"'window': {error}") from None
    recording.flush()
    try:
        report = db.run(lambda connection: window_report(connection, classifier, seconds))
    except SQLAlchemyError as error:
        log.error("monitoring figures unavailable: %s", db.error_reason(error))
        raise ApiError("database_unavailable") from None
    return jsonify(report)


def window_report(connection, classifier, seconds: int) -> dict:
    """The figures for the served model over the last ``seconds``; the body of GET /monitoring."""
    config = current_app.config
    model = classifier.model
    until = db.utcnow()
    since = until - timedelta(seconds=seconds)
    threshold = float(config["LOW_CONFIDENCE_THRESHOLD"])
    table = db.predictions
    rows = connection.execute(
        select(
            table.c.label,
            func.count(),
            func.sum(case((table.c.score < threshold, 1), else_=0)),
            func.sum(case((table.c.feedback_label.is_not(None), 1), else_=0)),
            func.sum(case((table.c.feedback_label == table.c.label, 1), else_=0)),
        )
        .where(table.c.model_name == model.name, table.c.model_version == model.version,
               table.c.created_at >= since)
        .group_by(table.c.label)
    ).all()
    by_label = {label: int(count) for label, count, *_ in sorted(rows)}
    total = sum(by_label.values())
    low = sum(int(row[2] or 0) for row in rows)
    answered = sum(int(row[3] or 0) for row in rows)
    correct = sum(int(row[4] or 0) for row in rows)
    return {
        "model": {"name": model.name, "version": model.version},
        "window": {"seconds": seconds, "since": _iso(since), "until": _iso(until)},
        "predictions": {"total": total, "by_label": by_label},
        "feedback": {"total": answered, "correct": correct, "accuracy": correct / answered if answered else None},
        "low_confidence": {"threshold": threshold, "total": low, "share": low / total if total else None},
        "drift": _drift(model, classifier.labels, by_label, float(config["DRIFT_THRESHOLD"])),
    }


def _drift(model, labels, by_label: dict, threshold: float) -> dict:
    reference = reference_distribution(model.meta, labels)
    if reference is None:
        return {
            "score": None, "threshold": threshold, "drifting": None,
            "reason": f"The served model's meta.json has no {REFERENCE_KEY} (files exported before "
                      "monitoring existed); re-export it with train_notebook.ipynb to get a drift score.",
        }
    score = drift_score(by_label, reference)
    return {
        "score": score, "threshold": threshold,
        "drifting": None if score is None else score >= threshold,
        "reason": None if score is not None else "No predictions in the window.",
    }


def _iso(moment) -> str:
    return moment.isoformat(timespec="seconds") + "Z"


def scrape_figures() -> bytes:
    """The window's figures for /metrics, in Prometheus text format (web/metrics.py adds them)."""
    classifier = loaded_classifier()
    if classifier is None:  # no served model yet, so no figures for it
        return b""
    registry = CollectorRegistry(auto_describe=False)
    families = []
    up = GaugeMetricFamily("monitoring_database_up", "1 when the monitoring database answered this scrape.")
    seconds = parse_duration(current_app.config["MONITORING_WINDOW"])
    try:
        report = db.run(lambda connection: window_report(connection, classifier, seconds))
        up.add_metric([], 1)
        families = _window_families(report)
    except SQLAlchemyError as error:
        up.add_metric([], 0)
        log.warning("monitoring figures left out of /metrics: %s", db.error_reason(error))
    families.append(up)
    registry.register(_Families(families))
    return generate_latest(registry)


def _window_families(report: dict) -> list:
    model = report["model"]
    keys = ["model", "version"]
    values = [model["name"], model["version"]]
    window = f" over the last MONITORING_WINDOW ({report['window']['seconds']}s)"

    def gauge(name: str, documentation: str, value, extra: dict | None = None):
        family = GaugeMetricFamily(name, documentation + window + ".", labels=keys + list(extra or {}))
        if value is not None:
            family.add_metric(values + list((extra or {}).values()), value)
        return family

    by_label = GaugeMetricFamily("monitoring_window_predictions", "Recorded predictions by predicted label" + window + ".",
                                 labels=keys + ["label"])
    for label, count in report["predictions"]["by_label"].items():
        by_label.add_metric(values + [label], count)
    feedback, low, drift = report["feedback"], report["low_confidence"], report["drift"]
    return [
        by_label,
        gauge("monitoring_feedback_answers", "Predictions with user feedback", feedback["total"]),
        gauge("monitoring_feedback_correct", "Predictions users said were right", feedback["correct"]),
        gauge("monitoring_feedback_accuracy", "Share of answered predictions users said were right", feedback["accuracy"]),
        gauge("monitoring_low_confidence_share", "Share of predictions scored under LOW_CONFIDENCE_THRESHOLD", low["share"]),
        gauge("monitoring_drift_score", "Total variation distance of predicted classes from the validation split's", drift["score"]),
    ]


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


@click.command("export-feedback")
@click.argument("directory", type=click.Path(file_okay=False))
@with_appcontext
def export_feedback_command(directory: str) -> None:
    """Write each kept image that has feedback as DIRECTORY/<label>/<id>.png, for retraining.

    Only predictions recorded with KEEP_IMAGES on have images. Running it again rewrites
    the same files.
    """
    recording.flush()
    try:
        written, skipped = db.run(lambda connection: export_feedback(connection, Path(directory)))
    except SQLAlchemyError as error:
        raise click.ClickException(f"the monitoring database failed: {db.error_reason(error)}") from error
    classes = len({path.parent.name for path in written})
    click.echo(f"wrote {len(written)} images in {classes} classes to {directory}"
               + (f"; {skipped} with feedback had no kept image (KEEP_IMAGES was off)" if skipped else ""))


def export_feedback(connection, directory: Path) -> tuple[list[Path], int]:
    """The images with feedback, as files; returns the paths written and the count without an image."""
    table = db.predictions
    answered = table.c.feedback_label.is_not(None)
    skipped = connection.execute(select(func.count()).where(answered, table.c.image.is_(None))).scalar()
    written = []
    query = (select(table.c.request_id, table.c.item, table.c.feedback_label, table.c.image)
             .where(answered, table.c.image.is_not(None)).order_by(table.c.id))
    for row in connection.execution_options(yield_per=100).execute(query):
        label = row.feedback_label
        if label in ("", ".", "..") or "/" in label or "\\" in label:
            log.warning("skipped an image whose label %r is no folder name", label)
            continue
        path = directory / label / f"{file_stem(row.request_id, row.item)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(row.image)
        written.append(path)
    return written, int(skipped or 0)


def file_stem(request_id: str, item: int) -> str:
    """The request id when it is a safe file name (ours always are), else a hash of it."""
    stem = request_id if _SAFE_NAME.fullmatch(request_id) else hashlib.sha256(request_id.encode()).hexdigest()[:32]
    return f"{stem}-{item}" if item else stem


def init_app(app: Flask) -> None:
    """Recording, feedback and monitoring: the database, the routes, /metrics figures, the command."""
    db.init_app(app)
    recording.init_app(app)
    app.register_blueprint(monitoring)
    # Queued records first, so that this scrape counts them (written or lost).
    app.extensions.setdefault(metrics.SCRAPE_PREPARE, []).append(recording.flush)
    app.extensions.setdefault(metrics.SCRAPE_EXTRAS, []).append(scrape_figures)
    app.cli.add_command(export_feedback_command)

