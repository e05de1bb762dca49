"""Watching the served model: POST /feedback, POST /device-predictions (the answers browsers
made with their own copy of the model), GET /monitoring, their figures in /metrics, and
``flask --app app export-feedback DIR``.

The figures come from the monitoring database (web/db.py), which every gunicorn worker
shares, so whichever worker answers, it answers for the whole server. docs/monitoring.md
describes every field.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from datetime import timedelta, timezone
from pathlib import Path

import click
from flask import Flask, current_app, jsonify
from flask.cli import with_appcontext
from marshmallow import fields, validate
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import and_, case, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from classifier.drift import REFERENCE_KEY, drift_score, reference_distribution
from classifier.errors import InvalidParameter
from classifier.verdict import KEEP, PROMOTE, WAIT, paired_verdict, unpaired_verdict

from . import db, records, telemetry
from .api import api_key_required, query_value
from .api_spec import Blueprint, Label, Schema, Setting
from .errors import ApiError
from .telemetry import REQUEST_ID_PATTERN
from .served_model import get_classifier, loaded_candidate, loaded_classifier
from .settings import DURATION_PATTERN, MAX_DURATION_S, parse_duration

log = logging.getLogger(__name__)

monitoring = Blueprint("monitoring", __name__, description="Watch the served model: feedback and figures")

MAX_ITEM = 10_000
MAX_DEVICE_PREDICTIONS = 100  # in one request: a browser sends what it kept offline in batches
SOURCES = ("server", "device")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ID_MESSAGE = ("'request_id' must be the X-Request-ID header of the answer "
               "(1 to 128 of: letters, digits, ._:+/=-).")
_LABEL_MESSAGE = "'label' must be the right class, as a string."
_ITEM_MESSAGE = f"'item' must be the image's place in its batch, from 0 to {MAX_ITEM}."
_COUNT = {"required": True, "validate": validate.Range(min=0)}
_SHARE = {"required": True, "allow_none": True, "validate": validate.Range(0, 1)}


class FeedbackRequest(Schema):
    error_messages = {"type": 'Send a JSON object: {"request_id": "<the X-Request-ID of the answer>", '
                              '"label": "<the right class>"}.'}
    request_id = fields.String(
        # The whole value must match (\Z: Python's $ allows a trailing newline); the document
        # states the same pattern in JSON Schema's spelling.
        required=True, validate=validate.Regexp(rf"(?:{REQUEST_ID_PATTERN.pattern})\Z", error=_ID_MESSAGE),
        metadata={"pattern": f"^{REQUEST_ID_PATTERN.pattern}$"},
        error_messages={"required": _ID_MESSAGE, "invalid": _ID_MESSAGE})
    label = Label(required=True, validate=validate.Length(min=1, error=_LABEL_MESSAGE), error_messages={
        "required": _LABEL_MESSAGE, "invalid": _LABEL_MESSAGE})
    item = fields.Integer(strict=True, load_default=0, metadata={"default": 0},
                          validate=validate.Range(0, MAX_ITEM, error=_ITEM_MESSAGE),
                          error_messages={"invalid": _ITEM_MESSAGE})


class Feedback(Schema):
    request_id = fields.String(required=True)
    item = fields.Integer(required=True, validate=validate.Range(min=0))
    label = fields.String(required=True)
    predicted = fields.String(required=True)
    correct = fields.Boolean(required=True)
    replaced = fields.String(required=True, allow_none=True,
                             metadata={"description": "The earlier answer this one replaced."})


_DEVICE_ID = validate.Regexp(rf"(?:{REQUEST_ID_PATTERN.pattern})\Z",
                            error="'id' must be 1 to 128 of: letters, digits, ._:+/=- (a UUID will do).")


class DevicePrediction(Schema):
    id = fields.String(required=True, validate=_DEVICE_ID, metadata={
        "pattern": f"^{REQUEST_ID_PATTERN.pattern}$",
        "description": "The browser's own id for the answer; feedback names it as its request_id."})
    label = fields.String(required=True, validate=validate.Length(1, 200))
    score = fields.Float(required=True, validate=validate.Range(0, 1))
    model_name = fields.String(required=True, validate=validate.Length(1, 200))
    model_version = fields.String(required=True, validate=validate.Length(1, 100))
    created_at = fields.AwareDateTime(required=True, default_timezone=timezone.utc)


class DevicePredictions(Schema):
    predictions = fields.List(fields.Nested(DevicePrediction), required=True,
                              validate=validate.Length(1, MAX_DEVICE_PREDICTIONS))


class DeviceRecorded(Schema):
    recorded = fields.Integer(**_COUNT)
    already_recorded = fields.Integer(**_COUNT)  # sent before: an id is recorded once


class WindowQuery(Schema):
    window = fields.String(metadata={
        "description": "How far back to look: a whole number and s, m, h or d (at most "
                       f"{MAX_DURATION_S // 86400}d); empty means the default.",
        "pattern": f"^{DURATION_PATTERN.pattern}$", "default": Setting("MONITORING_WINDOW")})


class ModelName(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)


class Window(Schema):
    seconds = fields.Integer(**_COUNT)
    since = fields.String(required=True)
    until = fields.String(required=True)


class Predictions(Schema):
    total = fields.Integer(**_COUNT)
    by_label = fields.Dict(keys=fields.String(), values=fields.Integer(validate=validate.Range(min=0)),
                           required=True)


class FeedbackFigures(Schema):
    total = fields.Integer(**_COUNT)
    correct = fields.Integer(**_COUNT)
    accuracy = fields.Float(**_SHARE)


class LowConfidence(Schema):
    threshold = fields.Float(**_SHARE)
    total = fields.Integer(**_COUNT)
    share = fields.Float(**_SHARE)


class Drift(Schema):
    score = fields.Float(**_SHARE)
    threshold = fields.Float(required=True)
    drifting = fields.Boolean(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)


class Latency(Schema):
    p50 = fields.Float(required=True, allow_none=True, validate=validate.Range(min=0))
    p95 = fields.Float(required=True, allow_none=True, validate=validate.Range(min=0))


class SourceFigures(Schema):
    predictions = fields.Integer(**_COUNT)
    feedback = fields.Integer(**_COUNT)
    correct = fields.Integer(**_COUNT)


class Figures(Schema):
    predictions = fields.Nested(Predictions, required=True)
    by_source = fields.Dict(keys=fields.String(validate=validate.OneOf(SOURCES)), required=True,
                            values=fields.Nested(SourceFigures),
                            metadata={"description": "Answered by the server, or in browsers (device)."})
    feedback = fields.Nested(FeedbackFigures, required=True)
    low_confidence = fields.Nested(LowConfidence, required=True)
    latency_ms = fields.Nested(Latency, required=True, metadata={"description": "The model's time per image"})


class ModelFigures(Figures, ModelName):
    pass


class Verdict(Schema):
    decision = fields.String(required=True, validate=validate.OneOf([PROMOTE, KEEP, WAIT]))
    reason = fields.String(required=True)
    rule = fields.String(required=True)
    p_value = fields.Float(**_SHARE)


class CandidateReport(Schema):
    model = fields.Nested(ModelName, required=True)
    mode = fields.String(required=True, validate=validate.OneOf(["shadow", "canary"]))
    share = fields.Float(required=True, validate=validate.Range(0, 1))
    compared = fields.Integer(**_COUNT, metadata={"description": "Images both models classified."})
    agreement = fields.Float(**_SHARE, metadata={"description": "Share of those with the same top-1 label."})
    models = fields.Dict(keys=fields.String(validate=validate.OneOf(["served", "candidate"])),
                         values=fields.Nested(ModelFigures), required=True, metadata={"description": (
                             "Each model's figures: on the images both classified (shadow), or on its own "
                             "answers since the candidate's first (canary).")})
    verdict = fields.Nested(Verdict, required=True)


class Report(Figures):
    model = fields.Nested(ModelName, required=True)
    window = fields.Nested(Window, required=True)
    drift = fields.Nested(Drift, required=True)
    candidate = fields.Nested(CandidateReport, required=True, allow_none=True, metadata={
        "description": "The candidate model against the served one; null without one."})


@monitoring.post("/feedback")
@api_key_required
@monitoring.arguments(FeedbackRequest)
@monitoring.response(200, Feedback, description="Recorded.")
@monitoring.errors("invalid_parameter", "unknown_label", "unauthorized", "unknown_request_id",
                   "model_not_ready", "database_unavailable")
def feedback(body: dict):
    """Say which class an earlier prediction should have been

    Names the prediction by the X-Request-ID header its answer carried (and `item`, its
    place in a batch). A later answer for the same prediction replaces the earlier one;
    `replaced` says what it replaced.
    """
    return jsonify(record_feedback(body["request_id"], body["item"], body["label"]))


def record_feedback(request_id: str, item: int, label: str) -> dict:
    """Store ``label`` as the right class of the prediction ``request_id`` (its ``item``)."""
    candidate = loaded_candidate()
    if label not in get_classifier().labels and (candidate is None or label not in candidate.labels):
        raise ApiError("unknown_label", f"The model has no class {label!r}. GET /model lists its classes.")
    try:
        records.flush()  # this worker's queued records: a prediction it answered just now
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
    return outcome


def give_feedback(connection, request_id: str, item: int, label: str) -> dict | None:
    """Store ``label`` as the right class of a prediction; None if there is no such prediction.

    A later answer for the same prediction replaces the earlier one (people correct
    themselves); ``feedback_count`` keeps how many answers it had. A candidate's shadow answer
    to the same image gets it too, so that it scores every model that saw the image.
    """
    table = db.predictions
    where = and_(table.c.request_id == request_id, table.c.item == item)
    # The answer the client saw first, before a shadow's.
    query = select(table.c.label, table.c.feedback_label).where(where).order_by(table.c.shadow)
    row = connection.execute(query).first()
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


@monitoring.post("/device-predictions")
@api_key_required
@monitoring.arguments(DevicePredictions)
@monitoring.response(200, DeviceRecorded, description="Recorded.")
@monitoring.errors("invalid_parameter", "unauthorized", "database_unavailable")
def device_predictions(body: dict):
    """Record answers a browser made with its own copy of the model

    The page sends them with its user's consent, when the network allows: label, score,
    model and time, never the image. Each has an id the browser made; an id already
    recorded is not recorded again, so a browser may send the same answers twice.
    """
    return jsonify(record_device_predictions(body["predictions"]))


def record_device_predictions(predictions: list[dict]) -> dict:
    """Store browsers' answers beside the server's (source "device"); how many were new."""
    now = db.utcnow()
    rows = {p["id"]: {  # an id given twice in one request counts once
        "request_id": p["id"], "item": 0, "source": "device", "label": p["label"], "score": p["score"],
        "top": [[p["label"], p["score"]]], "model_name": p["model_name"], "model_version": p["model_version"],
        # A browser's clock may run ahead of the server's: never a time after now.
        "created_at": min(p["created_at"].astimezone(timezone.utc).replace(tzinfo=None), now),
    } for p in predictions}
    try:
        try:
            recorded = db.run(lambda connection: insert_new(connection, list(rows.values())))
        except IntegrityError:  # another request recorded some of the same ids meanwhile
            recorded = db.run(lambda connection: insert_new(connection, list(rows.values())))
    except SQLAlchemyError as error:
        log.error("device predictions not recorded: %s", db.error_reason(error))
        raise ApiError("database_unavailable") from None
    return {"recorded": recorded, "already_recorded": len(predictions) - recorded}


def insert_new(connection, rows: list[dict]) -> int:
    """Insert the rows whose request id is not recorded yet; how many that was."""
    table = db.predictions
    ids = [row["request_id"] for row in rows]
    known = set(connection.execute(
        select(table.c.request_id).where(table.c.request_id.in_(ids), table.c.item == 0)).scalars())
    new = [row for row in rows if row["request_id"] not in known]
    if new:
        connection.execute(insert(table), new)
    return len(new)


@monitoring.get("/monitoring")
@monitoring.doc(parameters=[{"in": "query", "schema": WindowQuery}])
@monitoring.response(200, Report, description="The figures.")
@monitoring.errors("invalid_parameter", "model_not_ready", "database_unavailable")
def monitoring_report():
    """The served model's predictions, feedback, confidence and drift over a window"""
    return jsonify(report(query_value("window") or current_app.config["MONITORING_WINDOW"]))


def report(window: str) -> dict:
    """GET /monitoring's figures over the last ``window`` (a duration such as ``7d``)."""
    classifier = get_classifier()
    try:
        seconds = parse_duration(window)
    except ValueError as error:
        raise InvalidParameter(f"'window': {error}") from None
    records.flush()
    try:
        return db.run(lambda connection: window_report(connection, classifier, seconds))
    except SQLAlchemyError as error:
        log.error("monitoring figures unavailable: %s", db.error_reason(error))
        raise ApiError("database_unavailable") from None


def window_report(connection, classifier, seconds: int) -> dict:
    """The figures for the served model over the last ``seconds``; the body of GET /monitoring."""
    config = current_app.config
    model = classifier.model
    until = db.utcnow()
    since = until - timedelta(seconds=seconds)
    threshold = float(config["LOW_CONFIDENCE_THRESHOLD"])
    figures = model_figures(connection, _of_model(model, since), threshold)
    return {
        "model": {"name": model.name, "version": model.version},
        "window": {"seconds": seconds, "since": _iso(since), "until": _iso(until)},
        **figures,
        "drift": _drift(model, classifier.labels, figures["predictions"]["by_label"],
                        float(config["DRIFT_THRESHOLD"])),
        "candidate": candidate_report(connection, model, since, threshold),
    }


def _of_model(model, since, paired_with=None) -> list:
    """The conditions for ``model``'s predictions since ``since``; with ``paired_with``, only the
    images that model classified too."""
    table = db.predictions
    where = [table.c.model_name == model.name, table.c.model_version == model.version,
             table.c.created_at >= since]
    if paired_with is not None:
        other = table.alias("other")
        where.append(exists().where(other.c.request_id == table.c.request_id, other.c.item == table.c.item,
                                    other.c.model_name == paired_with.name,
                                    other.c.model_version == paired_with.version))
    return where


def model_figures(connection, where: list, threshold: float) -> dict:
    """The predictions that meet ``where``: by label, low-confidence, feedback, the model's time."""
    table = db.predictions
    rows = connection.execute(
        select(
            table.c.source,
            table.c.label,
            func.count(),
            func.sum(case((table.c.score < threshold, 1), else_=0)),
            func.sum(case((table.c.feedback_label.is_not(None), 1), else_=0)),
            func.sum(case((table.c.feedback_label == table.c.label, 1), else_=0)),
            func.count(table.c.latency_ms),
        )
        .where(*where)
        .group_by(table.c.source, table.c.label)
    ).all()
    by_label, by_source = {}, {source: {"predictions": 0, "feedback": 0, "correct": 0} for source in SOURCES}
    for source, label, count, _, answers, right, _ in rows:
        by_label[label] = by_label.get(label, 0) + int(count)
        figures = by_source[source]
        figures["predictions"] += int(count)
        figures["feedback"] += int(answers or 0)
        figures["correct"] += int(right or 0)
    total, low, answered, correct, timed = (sum(int(row[i] or 0) for row in rows) for i in range(2, 7))
    return {
        "predictions": {"total": total, "by_label": dict(sorted(by_label.items()))},
        "by_source": by_source,
        "feedback": _accuracy(correct, answered),
        "low_confidence": {"threshold": threshold, "total": low, "share": low / total if total else None},
        "latency_ms": {key: _percentile(connection, where, timed, quantile)
                       for key, quantile in (("p50", 0.5), ("p95", 0.95))},
    }


def _accuracy(correct: int, answered: int) -> dict:
    return {"total": answered, "correct": correct, "accuracy": correct / answered if answered else None}


def _percentile(connection, where: list, count: int, quantile: float) -> float | None:
    # The nearest rank, with SQL that SQLite and PostgreSQL both run.
    if not count:
        return None
    latency = db.predictions.c.latency_ms
    return connection.execute(select(latency).where(*where, latency.is_not(None)).order_by(latency)
                              .offset(math.ceil(quantile * count) - 1).limit(1)).scalar()


def candidate_report(connection, served, since, threshold: float) -> dict | None:
    """The candidate against the served model since ``since``, and the verdict (classifier/verdict.py)."""
    candidate = loaded_candidate()
    if candidate is None:
        return None
    config, candidate = current_app.config, candidate.model
    compared, agreed, answered, *right, served_only, only = _pairs(connection, served, candidate, since)
    if config["CANDIDATE_MODE"] == "shadow":
        pairs = {"served": (served, candidate), "candidate": (candidate, served)}
    else:  # each model's own answers, over the same time: from the candidate's first
        table = db.predictions
        first = connection.execute(select(func.min(table.c.created_at)).where(
            *_of_model(candidate, since), table.c.shadow.is_(False))).scalar()
        since = max(since, first) if first else since
        pairs = {"served": (served, None), "candidate": (candidate, None)}
    models = {}
    for (role, (model, other)), correct in zip(pairs.items(), right):
        models[role] = {"name": model.name, "version": model.version,
                        **model_figures(connection, _of_model(model, since, other), threshold)}
        if other is not None:  # the feedback on the answer, which may have come before the shadow's record
            models[role]["feedback"] = _accuracy(correct, answered)
    if config["CANDIDATE_MODE"] == "shadow":
        verdict = paired_verdict(answered, served_only, only)
    else:
        mine, theirs = models["served"]["feedback"], models["candidate"]["feedback"]
        verdict = unpaired_verdict(mine["correct"], mine["total"], theirs["correct"], theirs["total"])
    return {"model": {"name": candidate.name, "version": candidate.version}, "mode": config["CANDIDATE_MODE"],
            "share": config["CANDIDATE_SHARE"], "compared": compared,
            "agreement": agreed / compared if compared else None, "models": models, "verdict": verdict}


def _pairs(connection, served, candidate, since) -> list[int]:
    """Images both models classified: how many, how many alike, with feedback, right by each model,
    right by one model alone."""
    table = db.predictions
    mine, theirs = table.alias("mine"), table.alias("theirs")
    truth = mine.c.feedback_label  # the served model's row is the answer's: feedback finds it first

    def count(condition):
        return func.sum(case((condition, 1), else_=0))

    row = connection.execute(select(
        func.count(), count(mine.c.label == theirs.c.label), count(truth.is_not(None)),
        count(truth == mine.c.label), count(truth == theirs.c.label),
        count(and_(truth == mine.c.label, truth != theirs.c.label)),
        count(and_(truth == theirs.c.label, truth != mine.c.label)),
    ).where(mine.c.model_name == served.name, mine.c.model_version == served.version,
            mine.c.created_at >= since, theirs.c.model_name == candidate.name,
            theirs.c.model_version == candidate.version,
            theirs.c.request_id == mine.c.request_id, theirs.c.item == mine.c.item)).one()
    return [int(value or 0) for value in row]


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
    """The window's figures for /metrics, in Prometheus text format (web/telemetry.py adds them)."""
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


_FIGURES = (  # a model's figures as gauges: name, what, its value
    ("feedback_answers", "Predictions with user feedback", lambda figures: figures["feedback"]["total"]),
    ("feedback_correct", "Predictions users said were right", lambda figures: figures["feedback"]["correct"]),
    ("feedback_accuracy", "Share of answered predictions users said were right",
     lambda figures: figures["feedback"]["accuracy"]),
    ("low_confidence_share", "Share of predictions scored under LOW_CONFIDENCE_THRESHOLD",
     lambda figures: figures["low_confidence"]["share"]),
)


def _window_families(report: dict) -> list:
    """The report as gauges: the served model's figures, then a candidate's comparison and each model's."""
    window = f" over the last MONITORING_WINDOW ({report['window']['seconds']}s)."
    keys, own = ["model", "version"], [report["model"]["name"], report["model"]["version"]]
    families = _figure_families("monitoring_", keys, [(own, report)], window) + [
        _family("monitoring_drift_score", "Total variation distance of predicted classes from the validation "
                "split's" + window, keys, [(own, report["drift"]["score"])])]
    candidate = report["candidate"]
    if candidate is None:
        return families
    theirs, verdict = [candidate["model"]["name"], candidate["model"]["version"]], candidate["verdict"]
    rows = [([figures["name"], figures["version"], role], figures)
            for role, figures in candidate["models"].items()]
    return families + _figure_families("monitoring_candidate_", keys + ["role"], rows, window) + [
        _family("monitoring_candidate_compared", "Images both the served and the candidate model classified"
                + window, keys, [(theirs, candidate["compared"])]),
        _family("monitoring_candidate_agreement", "Share of those with the same top-1 label" + window, keys,
                [(theirs, candidate["agreement"])]),
        _family("monitoring_candidate_verdict", "1 for the verdict on the candidate" + window,
                keys + ["decision"], [(theirs + [choice], int(choice == verdict["decision"]))
                                      for choice in (PROMOTE, KEEP, WAIT)]),
        _family("monitoring_candidate_p_value", "The p-value of the verdict's test" + window, keys,
                [(theirs, verdict["p_value"])]),
    ]


def _figure_families(prefix: str, keys: list, rows: list, window: str) -> list:
    """The figures of each model in ``rows`` (its label values, its figures) as the gauges ``prefix``*."""
    return [
        _family(f"{prefix}window_predictions", "Recorded predictions by predicted label" + window,
                keys + ["label"], [(values + [label], count) for values, figures in rows
                                   for label, count in figures["predictions"]["by_label"].items()]),
        *(_family(prefix + name, documentation + window, keys,
                  [(values, value(figures)) for values, figures in rows])
          for name, documentation, value in _FIGURES),
        _family(f"{prefix}latency_ms", "The model's time per image" + window, keys + ["quantile"],
                [(values + [quantile], figures["latency_ms"][key]) for values, figures in rows
                 for key, quantile in (("p50", "0.5"), ("p95", "0.95"))]),
    ]


def _family(name: str, documentation: str, keys: list, samples) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=keys)
    for values, value in samples:
        if value is not None:  # a figure without data (no feedback yet) is left out
            family.add_metric(values, value)
    return family


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
    records.flush()
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
    # The answers the clients saw: a candidate's shadow answer to the same image keeps no copy of it.
    answered = and_(table.c.feedback_label.is_not(None), table.c.shadow.is_(False))
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
    """Recording and monitoring: the database, /metrics figures, the command (app.py registers the routes)."""
    db.init_app(app)
    records.init_app(app)
    # Queued records first, so that this scrape counts them (written or lost).
    app.extensions.setdefault(telemetry.SCRAPE_PREPARE, []).append(records.flush)
    app.extensions.setdefault(telemetry.SCRAPE_EXTRAS, []).append(scrape_figures)
    app.cli.add_command(export_feedback_command)

