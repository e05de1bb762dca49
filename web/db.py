"""The monitoring database, end to end: where it is, its schema, connections, clean-up.

Like flaskr's db.py: ``init_app`` attaches it (engine, schema created or migrated at
start), ``get_db`` opens this request's connection on ``g`` and the teardown returns it to
the pool. ``DATABASE_URL`` names it: PostgreSQL (``postgresql://`` or Heroku's
``postgres://``) or a SQLite file (``sqlite:///PATH``); unset, a SQLite file in the app's
instance folder. SQLAlchemy Core does the talking, so both run the same statements.

A database that is down at start does not stop the app: predictions are still answered
(web/records.py counts what could not be stored) and the schema is set up on the first
connection that works. A URL that cannot name a database does stop it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from flask import Flask, current_app, g
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    Index,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

log = logging.getLogger(__name__)

EXTENSION_KEY = "monitoring_db"
SQLITE_FILE = "monitoring.sqlite"
# A database that does not answer must not hold a worker: give up connecting after this.
CONNECT_TIMEOUT_S = 3

metadata = MetaData()

# One row per answered image. Times are UTC. `item` is the image's place in a batch (0 for
# POST /predict). The feedback columns hold the latest answer a user gave for it. `source`
# says which path answered: the server, or a browser's own copy of the model ("device",
# reported by POST /device-predictions under the id the browser gave it).
predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("item", Integer, nullable=False, default=0),
    Column("created_at", DateTime, nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(100), nullable=False),
    Column("label", String(200), nullable=False),
    Column("score", Float, nullable=False),
    Column("top", JSON, nullable=False),
    Column("feedback_label", String(200), nullable=True),
    Column("feedback_at", DateTime, nullable=True),
    Column("feedback_count", Integer, nullable=False, default=0),
    Column("source", String(16), nullable=False, server_default="server"),
    # A candidate's answer that the client never saw (CANDIDATE_MODE=shadow), beside the answer.
    Column("shadow", Boolean, nullable=False, default=False, server_default=false()),
    Column("latency_ms", Float, nullable=True),  # the model's time for this image
    # The 224x224 PNG the model saw, only with KEEP_IMAGES; last, so scans skip it.
    Column("image", LargeBinary, nullable=True),
    UniqueConstraint("request_id", "item", "shadow", name="predictions_request_item"),
    Index("predictions_model_time", "model_name", "model_version", "created_at"),
    Index("predictions_created_at", "created_at"),
)

# The schema's version, so a later release can migrate an older database at start.
schema_version = Table(
    "monitoring_schema",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime, nullable=False),
)


def _shadow_answers(connection: Connection) -> None:
    """Version 3: a candidate's shadow answer beside each answer (one of each per image), and times."""
    connection.execute(text("ALTER TABLE predictions ADD COLUMN shadow BOOLEAN DEFAULT false NOT NULL"))
    connection.execute(text("ALTER TABLE predictions ADD COLUMN latency_ms FLOAT"))
    key, widened = "UNIQUE (request_id, item)", "UNIQUE (request_id, item, shadow)"
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"ALTER TABLE predictions DROP CONSTRAINT predictions_request_item, "
                                f"ADD CONSTRAINT predictions_request_item {widened}"))
        return
    # SQLite cannot change a constraint: the table is made again with it (sqlite.org/lang_altertable.html).
    table = connection.execute(text("SELECT sql FROM sqlite_master WHERE name = 'predictions'")).scalar()
    indexes = connection.execute(text("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                      "AND tbl_name = 'predictions' AND sql IS NOT NULL")).scalars().all()
    if key not in table:
        raise RuntimeError(f"The monitoring database's predictions table is not one this code made: {table}")
    connection.execute(text(table.replace(key, widened).replace("predictions", "predictions_new", 1)))
    connection.execute(text("INSERT INTO predictions_new SELECT * FROM predictions"))
    connection.execute(text("DROP TABLE predictions"))
    connection.execute(text("ALTER TABLE predictions_new RENAME TO predictions"))
    for index in indexes:
        connection.execute(text(index))


# Steps from one version to the next, applied in order at start to a database made by an
# older release; `metadata.create_all` makes a new one at the latest version. A new column is
# a new entry here, and in the table above.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: lambda connection: connection.execute(
        text("ALTER TABLE predictions ADD COLUMN source VARCHAR(16) NOT NULL DEFAULT 'server'")),
    3: _shadow_answers,
}
SCHEMA_VERSION = max(MIGRATIONS)
# Two gunicorn workers start together; on PostgreSQL this lock lets one set up the schema.
_PG_SCHEMA_LOCK = 0x6D6F6E69  # "moni"


def utcnow() -> datetime:
    """Now in UTC, without a zone: the form every time in the database takes."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def database_url(config, instance_path: str) -> str:
    """The SQLAlchemy URL for DATABASE_URL; ValueError for one that names no database."""
    raw = (config.get("DATABASE_URL") or "").strip()
    if not raw:
        return f"sqlite:///{Path(instance_path) / SQLITE_FILE}"
    # Heroku Postgres sets postgres://, which SQLAlchemy no longer accepts as a name.
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://"):]
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError(
            "DATABASE_URL must be postgresql://user:password@host/dbname or sqlite:///PATH"
        ) from None
    if url.drivername in ("postgresql", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if url.drivername == "sqlite" and url.database:
        return raw
    raise ValueError(
        f"DATABASE_URL names {url.drivername!r}; use postgresql://user:password@host/dbname "
        "or sqlite:///PATH"
    )


def make_engine(url: str) -> Engine:
    """An engine with a small pool: a sync worker handles one request at a time."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:  # then connecting fails, and is reported as the database being down
                log.error("cannot create the folder of the monitoring database %s: %s", path, error)
        engine = create_engine(url, connect_args={"timeout": CONNECT_TIMEOUT_S})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(
        url,
        pool_size=2,
        max_overflow=4,
        # No pre-ping (a round trip per request): a connection the server dropped (a restart)
        # fails its statement, and `run` (or the record writer) tries once more on a fresh one.
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )


def _tune_sqlite(dbapi_connection, _record) -> None:
    # WAL lets the workers read while one writes; NORMAL syncs at checkpoints, not at each
    # commit (a power cut can lose the last commits, never corrupt the file).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={CONNECT_TIMEOUT_S * 1000}")
    cursor.close()


class Database:
    """The app's engine, whether its schema is known to be in place, and this process's
    recording clock (web/records.py): when to try a failed database again, when to prune."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.schema_ready = False
        self.retry_at = 0.0
        self.prune_at = 0.0

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ensure_schema(self) -> None:
        """Create the tables, or migrate them to SCHEMA_VERSION; once per process."""
        if self.schema_ready:
            return
        for attempt in range(3):
            try:
                with self.engine.begin() as connection:
                    _set_up_schema(connection)
                break
            except SQLAlchemyError:
                # Another worker created the same tables between our check and our CREATE.
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))
        self.schema_ready = True


def _set_up_schema(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
    metadata.create_all(connection)
    current = connection.execute(select(func.max(schema_version.c.version))).scalar()
    if current is None:
        connection.execute(insert(schema_version).values(version=SCHEMA_VERSION, applied_at=utcnow()))
        return
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"The monitoring database has schema version {current}, newer than this code's "
            f"{SCHEMA_VERSION}: deploy the newer code, or point DATABASE_URL elsewhere."
        )
    for version in sorted(version for version in MIGRATIONS if version > current):
        MIGRATIONS[version](connection)
        connection.execute(insert(schema_version).values(version=version, applied_at=utcnow()))
        log.info("monitoring database migrated to schema version %d", version)


def get_database(app: Flask | None = None) -> Database:
    return (app or current_app).extensions[EXTENSION_KEY]


def get_db() -> Connection:
    """This request's connection (opened on first use, schema checked); raises if the database is down."""
    if "db" not in g:
        database = get_database()
        database.ensure_schema()
        g.db = database.engine.connect()
    return g.db


def run(work):
    """``work(connection)`` in a transaction on this request's connection; its result."""
    def attempt():
        connection = get_db()
        try:
            with connection.begin():
                return work(connection)
        except DBAPIError:
            close_db()  # a retry opens a fresh one
            raise

    return once_more_if_dropped(attempt)


def in_transaction(engine: Engine, work):
    """``work(connection)`` in a transaction of its own, outside any request (the record
    writer's thread); its result."""
    def attempt():
        with engine.begin() as connection:
            return work(connection)

    return once_more_if_dropped(attempt)


def once_more_if_dropped(attempt):
    """``attempt()``, and once more if it failed on a connection the database had dropped
    since it was last used (a restart, a fail-over)."""
    try:
        return attempt()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    return attempt()


def close_db(_error=None) -> None:
    connection = g.pop("db", None)
    if connection is not None:
        try:
            connection.close()
        except SQLAlchemyError:  # a connection to a database that went away
            log.debug("closing a broken database connection", exc_info=True)


def prune(connection: Connection, retention_days: int, max_predictions: int, now: datetime | None = None) -> int:
    """Delete predictions older than ``retention_days`` and all but the newest ``max_predictions``."""
    now = now or utcnow()
    removed = connection.execute(
        delete(predictions).where(predictions.c.created_at < now - timedelta(days=retention_days))
    ).rowcount
    # Ids grow with time, so the newest rows are those above the max_predictions-th id.
    newest_kept = connection.execute(
        select(predictions.c.id).order_by(predictions.c.id.desc()).offset(max_predictions - 1).limit(1)
    ).scalar()
    if newest_kept is not None:
        removed += connection.execute(delete(predictions).where(predictions.c.id < newest_kept)).rowcount
    return removed


def init_app(app: Flask) -> Database:
    """Attach the database: engine from DATABASE_URL, schema set up now if the database answers."""
    url = database_url(app.config, app.instance_path)
    database = Database(make_engine(url))
    app.extensions[EXTENSION_KEY] = database
    app.teardown_appcontext(close_db)
    try:
        database.ensure_schema()
        log.info("monitoring database: %s", make_url(url).render_as_string(hide_password=True))
    except SQLAlchemyError as error:
        log.error("monitoring database unavailable at start (%s); predictions will be served "
                  "without being recorded until it answers", error_reason(error))
    return database


def error_reason(error: Exception) -> str:
    """The first line of what the database driver said."""
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0]
