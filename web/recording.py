"""Every prediction the API answers is written to the monitoring database (web/db.py).

Recording never fails or delays a prediction: a request only queues its records, and a
thread in each worker writes them in batches (web/record_writer.py). Whatever goes wrong
with the database, the answer goes out, the loss is counted in /metrics
(``prediction_records_lost_total`` by reason) and logged. After a failure the database is
left alone for ``RETRY_AFTER_S``, so a database that hangs costs one connect timeout, not one
per batch. Old rows are pruned now and then (``RETENTION_DAYS``, ``RETENTION_MAX_PREDICTIONS``).
With ``KEEP_IMAGES`` the 224x224 copy of each image the model saw is stored beside its
prediction, as a PNG. Code that reads the database calls ``flush()`` first, so that it sees
this worker's own records.
"""

from __future__ import annotations

import io
import logging
from typing import Sequence

from flask import Flask, current_app
from PIL import Image
from prometheus_client import Counter

from classifier.errors import InputError

from . import db
from .access_log import request_id
from .record_writer import RECORDED, RECORDS_LOST, Record, RecordWriter  # noqa: F401 (the counters' home)

log = logging.getLogger(__name__)

WRITER_KEY = "prediction_record_writer"

PREDICTIONS = Counter("model_predictions", "Predictions answered, by model, version and predicted label.",
                      ["model", "version", "label"])


def record_predictions(classifier, images: Sequence, results: Sequence) -> None:
    """Count and queue the predictions of this request (a batch's errors, in place, are skipped).

    ``classifier`` is the served ``Classifier``; ``images`` what it prepared of each upload
    (``Classifier.prepare``), ``results`` its ``Prediction`` for each, or the ``InputError``
    that item got.
    """
    name, version = classifier.model.name, classifier.model.version  # properties: read once
    answered = [(item, image, result) for item, (image, result) in enumerate(zip(images, results))
                if not isinstance(result, InputError)]
    for _, _, prediction in answered:
        PREDICTIONS.labels(name, version, prediction.top[0][0]).inc()
    config = current_app.config
    if not answered or not config["RECORD_PREDICTIONS"]:
        return
    now, rid, keep = db.utcnow(), request_id(), config["KEEP_IMAGES"]
    writer(current_app).submit([
        Record(rid, item, now, name, version, prediction.top[0][0], prediction.top[0][1],
               [[label, score] for label, score in prediction.top],
               png_bytes(image) if keep else None)
        for item, image, prediction in answered
    ])


def writer(app: Flask) -> RecordWriter:
    """This app's record writer in this process."""
    return app.extensions[WRITER_KEY]


def flush(app: Flask | None = None) -> None:
    """Write this worker's queued records now: before reading them back (feedback, /monitoring)."""
    app = app or current_app
    if WRITER_KEY in app.extensions:
        writer(app).flush()


def init_app(app: Flask) -> None:
    config = app.config
    database = db.get_database(app)

    def prune() -> int:
        return db.in_transaction(database.engine, lambda connection: db.prune(
            connection, config["RETENTION_DAYS"], config["RETENTION_MAX_PREDICTIONS"]))

    app.extensions[WRITER_KEY] = RecordWriter(database, queue_limit=int(config["RECORD_QUEUE_LIMIT"]),
                                              flush_s=int(config["RECORD_FLUSH_MS"]) / 1000, prune=prune)


def png_bytes(image: Image.Image) -> bytes:
    """The image as the model saw it (decoded, upright, 224x224), as PNG bytes."""
    buffer = io.BytesIO()
    # The fastest compression: the request waits for it (docs/monitoring.md has the figures).
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
