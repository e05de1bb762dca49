"""Every prediction the API answers is written to the monitoring database (web/db.py).

Recording never fails a prediction: whatever goes wrong with the database, the answer goes
out, the loss is counted in /metrics (``prediction_records_lost_total`` by reason) and
logged. After a failure the database is left alone for ``RETRY_AFTER_S``, so a database
that hangs costs one connect timeout, not one per request. Old rows are pruned now and then
(``RETENTION_DAYS``, ``RETENTION_MAX_PREDICTIONS``). With ``KEEP_IMAGES`` the 224x224 copy
of each image the model saw is stored beside its prediction, as a PNG.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Sequence

from flask import current_app
from prometheus_client import Counter
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from classifier.errors import InputError
from classifier.images import decode_image, resize_for_model

from . import db
from .access_log import request_id

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0
PRUNE_EVERY_S = 60.0

PREDICTIONS = Counter("model_predictions", "Predictions answered, by model, version and predicted label.",
                      ["model", "version", "label"])
RECORDED = Counter("prediction_records", "Predictions written to the monitoring database.")
RECORDS_LOST = Counter("prediction_records_lost",
                       "Predictions answered but not written to the monitoring database, by reason.",
                       ["reason"])

_INSERT = insert(db.predictions)  # built once; SQLAlchemy caches its compiled form


def record_predictions(classifier, uploads: Sequence[bytes], results: Sequence) -> None:
    """Count and store the predictions of this request (a batch's errors, in place, are skipped).

    ``classifier`` is the served ``Classifier``; ``results`` its ``Prediction`` for each upload,
    or the ``InputError`` that image got.
    """
    name, version = classifier.model.name, classifier.model.version  # properties: read once
    answered = [(item, upload, result) for item, (upload, result) in enumerate(zip(uploads, results))
                if not isinstance(result, InputError)]
    for _, _, prediction in answered:
        PREDICTIONS.labels(name, version, prediction.top[0][0]).inc()
    config = current_app.config
    if not answered or not config["RECORD_PREDICTIONS"]:
        return
    database = db.get_database()
    if time.monotonic() < database.retry_at:
        RECORDS_LOST.labels("database_unavailable").inc(len(answered))
        return
    now = db.utcnow()
    rows = [
        {
            "request_id": request_id(),
            "item": item,
            "created_at": now,
            "model_name": name,
            "model_version": version,
            "label": prediction.top[0][0],
            "score": prediction.top[0][1],
            "top": [[label, score] for label, score in prediction.top],
            "image": kept_image(upload, classifier.max_pixels) if config["KEEP_IMAGES"] else None,
        }
        for item, upload, prediction in answered
    ]
    try:
        db.run(lambda connection: connection.execute(_INSERT, rows), durable=False)
    except IntegrityError:
        # The client sent an X-Request-ID that an earlier request already used.
        RECORDS_LOST.labels("duplicate_request_id").inc(len(rows))
        log.warning("prediction not recorded: request id %r was already recorded", request_id())
        return
    except SQLAlchemyError as error:
        database.retry_at = time.monotonic() + RETRY_AFTER_S
        RECORDS_LOST.labels("database_unavailable").inc(len(rows))
        log.error("prediction %s not recorded, the monitoring database failed: %s (next try in %.0fs)",
                  request_id(), db.error_reason(error), RETRY_AFTER_S)
        return
    RECORDED.inc(len(rows))
    if time.monotonic() >= database.prune_at:
        database.prune_at = time.monotonic() + PRUNE_EVERY_S
        prune_old_predictions()


def prune_old_predictions() -> None:
    config = current_app.config
    try:
        removed = db.run(lambda connection: db.prune(connection, config["RETENTION_DAYS"], config["RETENTION_MAX_PREDICTIONS"]))
    except SQLAlchemyError as error:
        log.warning("could not prune old predictions: %s", db.error_reason(error))
        return
    if removed:
        log.info("pruned %d predictions past the retention limits", removed)


def kept_image(upload: bytes, max_pixels: int) -> bytes | None:
    """The image as the model saw it (decoded, upright, 224x224), as PNG bytes."""
    try:
        image = resize_for_model(decode_image(upload, max_pixels=max_pixels))
    except InputError:  # it was classified, so it decodes; but never fail the answer
        return None
    buffer = io.BytesIO()
    # The fastest compression: the request waits for it (docs/monitoring.md has the figures).
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
