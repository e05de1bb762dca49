"""Every prediction the API answers is written to the monitoring database (web/db.py).

Recording never fails or delays a prediction: a request only counts its predictions and
appends its records to a bounded queue (``record_predictions``), and a thread in each worker
(``RecordWriter``) writes what is waiting with one multi-row INSERT and one commit, at most
``RECORD_FLUSH_MS`` after the first row arrived, or at once when ``batch_rows`` are waiting.
So no request waits for the database, and the database sees one transaction per batch
instead of one per request (docs/monitoring.md has the measured cost). With ``KEEP_IMAGES``
the 224x224 copy of each image the model saw is stored beside its prediction, as a PNG. Code
that reads the database calls ``flush()`` first, so that it sees this worker's own records.

What can be lost, and how it is counted in /metrics (``prediction_records_lost_total{reason}``)
and logged: ``queue_full`` when the queue is at its limit (a database slower than the
traffic, or down and not yet known to be), ``database_unavailable`` for a batch the database
refused (after which it is left alone for ``RETRY_AFTER_S``, so a database that hangs costs
one connect timeout, not one per batch), ``duplicate_request_id`` for a client that reused an
X-Request-ID, and ``write_failed`` for anything else that went wrong in writing (a bug: logged
with its traceback). ``close()``, at exit (a gunicorn worker leaves through sys.exit, so
atexit runs), writes what is left, so a graceful stop loses nothing; a worker killed outright
loses what was waiting, at most one flush interval of records. Old rows are pruned now and
then (``RETENTION_DAYS``, ``RETENTION_MAX_PREDICTIONS``).
"""

from __future__ import annotations

import atexit
import io
import logging
import threading
import time
import weakref
from typing import Callable, NamedTuple, Sequence

from flask import Flask, current_app
from PIL import Image
from prometheus_client import Counter
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from classifier.errors import InputError

from . import db
from .telemetry import request_id

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0
PRUNE_EVERY_S = 60.0
# With KEEP_IMAGES each row carries a PNG: bound the queue's bytes as well as its rows.
QUEUE_LIMIT_BYTES = 32 * 1024 * 1024

RECORDED = Counter("prediction_records", "Predictions written to the monitoring database.")
RECORDS_LOST = Counter("prediction_records_lost",
                       "Predictions answered but not written to the monitoring database, by reason.",
                       ["reason"])

_INSERT = insert(db.predictions)  # built once; SQLAlchemy caches its compiled form
_COLUMNS = ("request_id", "item", "created_at", "model_name", "model_version", "label", "score", "top", "image")


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


class Record(NamedTuple):
    """One answered image, as a request queues it: cheap to make, turned into a row by the writer."""
    request_id: str
    item: int
    created_at: object
    model_name: str
    model_version: str
    label: str
    score: float
    top: list
    image: bytes | None


class RecordWriter:
    """The queue and the thread that empties it, for one app's database in one process."""

    def __init__(self, database: db.Database, queue_limit: int, flush_s: float,
                 prune: Callable[[], int] | None = None, batch_rows: int = 500):
        self.database = database
        self.queue_limit = queue_limit
        self.flush_s = flush_s
        # Rows per INSERT; this many waiting wake the thread before the interval is up.
        self.batch_rows = batch_rows
        self.prune = prune
        self._pending: list[Record] = []
        self._pending_bytes = 0
        self._condition = threading.Condition()
        self._flush_lock = threading.Lock()  # one batch at a time: the thread's, or a reader's flush
        self._thread: threading.Thread | None = None
        self._closed = False
        _WRITERS.add(self)

    def submit(self, records: list[Record]) -> None:
        """Queue a request's records; count them lost when they cannot be (never raises, never waits)."""
        if time.monotonic() < self.database.retry_at:
            RECORDS_LOST.labels("database_unavailable").inc(len(records))
            return
        size = sum(len(record.image) for record in records if record.image)
        with self._condition:
            if self._closed or (len(self._pending) + len(records) > self.queue_limit
                                or self._pending_bytes + size > QUEUE_LIMIT_BYTES):
                full = True
            else:
                full = False
                was_empty = not self._pending
                self._pending += records
                self._pending_bytes += size
                # Wake the thread: from its idle wait for a first row, or early when a batch is full.
                if was_empty or len(self._pending) >= self.batch_rows:
                    self._condition.notify()
            if self._thread is None and not self._closed:
                # Started on first use, so in the gunicorn worker, after the fork.
                self._thread = threading.Thread(target=self._run, name="prediction-records", daemon=True)
                self._thread.start()
        if full:
            RECORDS_LOST.labels("queue_full").inc(len(records))
            log.error("prediction %s not recorded: the record queue is full (%d waiting; RECORD_QUEUE_LIMIT)",
                      records[0].request_id, self.queue_limit)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if not self._closed and len(self._pending) < self.batch_rows:
                    self._condition.wait(self.flush_s)  # gather the rows of the next flush interval
                closed = self._closed
            self.flush()
            if closed:
                return

    def flush(self) -> None:
        """Write everything queued so far (a reader of the database calls it first, in-process)."""
        with self._flush_lock:
            while True:
                with self._condition:
                    batch = self._pending[:self.batch_rows]
                    del self._pending[:self.batch_rows]
                    self._pending_bytes -= sum(len(record.image) for record in batch if record.image)
                if not batch:
                    return
                self._write(batch)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is left and stop the thread: at a worker's graceful exit."""
        with self._condition:
            self._closed = True
            self._condition.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush()  # whatever the thread had not taken (or no thread ever started)

    def _write(self, batch: list[Record]) -> None:
        rows = [dict(zip(_COLUMNS, record)) for record in batch]
        try:
            self._insert(rows)
        except IntegrityError:
            # A client reused an X-Request-ID: write request by request, to lose only those.
            self._write_one_by_one(rows)
            return
        except SQLAlchemyError as error:
            self._lost_to_database(rows, error)
            return
        except Exception:  # a bug, not the database: keep the thread alive, count and log the loss
            RECORDS_LOST.labels("write_failed").inc(len(rows))
            log.exception("%d prediction records not recorded: writing them failed", len(rows))
            return
        RECORDED.inc(len(rows))
        self._maybe_prune()

    def _insert(self, rows: list[dict]) -> None:
        """One transaction (``db.in_transaction``: a dropped connection is replaced once)."""
        self.database.ensure_schema()
        db.in_transaction(self.database.engine, lambda connection: connection.execute(_INSERT, rows))

    def _write_one_by_one(self, rows: list[dict]) -> None:
        for row in rows:
            try:
                self._insert([row])
            except IntegrityError:
                RECORDS_LOST.labels("duplicate_request_id").inc()
                log.warning("prediction not recorded: request id %r was already recorded", row["request_id"])
            except SQLAlchemyError as error:
                self._lost_to_database([row], error)
            else:
                RECORDED.inc()

    def _lost_to_database(self, rows: list[dict], error: Exception) -> None:
        self.database.retry_at = time.monotonic() + RETRY_AFTER_S
        RECORDS_LOST.labels("database_unavailable").inc(len(rows))
        ids = sorted({row["request_id"] for row in rows})
        named = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        log.error("prediction %s not recorded, the monitoring database failed: %s (next try in %.0fs)",
                  named, db.error_reason(error), RETRY_AFTER_S)

    def _maybe_prune(self) -> None:
        if self.prune is None or time.monotonic() < self.database.prune_at:
            return
        self.database.prune_at = time.monotonic() + PRUNE_EVERY_S
        try:
            removed = self.prune()
        except SQLAlchemyError as error:
            log.warning("could not prune old predictions: %s", db.error_reason(error))
            return
        if removed:
            log.info("pruned %d predictions past the retention limits", removed)


_WRITERS: "weakref.WeakSet[RecordWriter]" = weakref.WeakSet()


def close_all(*_args) -> None:
    """Flush and stop every writer of this process; run at exit (a gunicorn worker exits through sys.exit)."""
    for writer in list(_WRITERS):
        try:
            writer.close()
        except Exception:  # at exit: log it, and let the others flush
            log.exception("could not flush the prediction records at exit")


atexit.register(close_all)
