"""Where a prediction record's time goes, in one process: building its row, a request's own
write (pool checkout, INSERT, commit, return), the INSERT alone, and batches of 50.

    python -m bench.record_cost        # SQLite in a temporary folder, then a PostgreSQL server (fsync on)

SQLAlchemy Core and the app's own engines (web/db.py). docs/monitoring.md quotes the figures.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from testing.postgres import PostgresServer  # noqa: E402
from web import db  # noqa: E402

COUNT = 1000
BATCH = 50


def row(index: int, tag: str) -> dict:
    return {"request_id": f"{tag}-{index}", "item": 0, "created_at": db.utcnow(), "model_name": "m",
            "model_version": "1", "label": "beach", "score": 0.9,
            "top": [["beach", 0.9], ["river", 0.05], ["forest", 0.03]], "image": None}


def per_record_us(started: float) -> float:
    return (time.perf_counter() - started) / COUNT * 1e6


def measure(url: str) -> str:
    engine = db.make_engine(db.database_url({"DATABASE_URL": url}, tempfile.gettempdir()))
    db.Database(engine).ensure_schema()
    statement = insert(db.predictions)
    started = time.perf_counter()
    [row(index, "build") for index in range(COUNT)]
    build = per_record_us(started)
    started = time.perf_counter()
    for index in range(COUNT):  # what a request did before the batch writer
        with engine.connect() as connection, connection.begin():
            connection.execute(statement, [row(index, "request")])
    own_write = per_record_us(started)
    with engine.connect() as connection:
        started = time.perf_counter()
        with connection.begin():
            for index in range(COUNT):
                connection.execute(statement, [row(index, "insert")])
        insert_only = per_record_us(started)
        started = time.perf_counter()
        for start in range(0, COUNT, BATCH):
            with connection.begin():
                connection.execute(statement, [row(index, "batch") for index in range(start, start + BATCH)])
        batched = per_record_us(started)
    engine.dispose()
    return (f"{engine.dialect.name}: build a row {build:.0f} µs; a request's own write {own_write:.0f} µs; "
            f"the INSERT alone {insert_only:.0f} µs; in batches of {BATCH} {batched:.0f} µs a record")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        print(measure(f"sqlite:///{scratch}/records.db"), flush=True)
    postgres = PostgresServer(durable=True)
    postgres.start()
    try:
        print(measure(postgres.new_database()), flush=True)
    finally:
        postgres.close()


if __name__ == "__main__":
    main()
