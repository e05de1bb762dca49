"""Recording, feedback and monitoring (web/db.py, web/records.py, web/monitoring.py).

Most tests run twice: on a SQLite file and on a real PostgreSQL server that the tests
start (testing/postgres.py). The last ones run the real Procfile server, two workers.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, text, update

from app import create_app
from classifier.drift import REFERENCE_KEY
from training.export import export_model
from web import db, records

from testing.load import send, wait_until
from testing.multipart import form_body
from testing.postgres import PostgresServer
from testing.samples import TINY_LABELS, colour_network, image_bytes
from testing.servers import procfile_server

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
# Channels nearly equal: the colour model says red, but with under 50% (0.47).
UNSURE_RED = (105, 100, 95)
KEY = "monitoring-test-key-0123456789"


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitoring.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="session")
def model_with_reference(tmp_path_factory) -> Path:
    """The colour model, with the validation split's predicted classes in its meta.json."""
    meta = {"name": "tiny-colours", "version": "0.1.0", REFERENCE_KEY: {"red": 0.5, "green": 0.5, "blue": 0.0}}
    path = tmp_path_factory.mktemp("models") / "tiny-reference.zip"
    return export_model(colour_network(), TINY_LABELS, meta, path, mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture
def make_app(tiny_model_path, database_url):
    """Apps on this test's database; their engines are closed afterwards."""
    apps = []

    def make(**config):
        app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                          "DATABASE_URL": database_url, **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        records.writer(app).close()
        db.get_database(app).engine.dispose()


def predict(client, colour=RED, request_id=None, **query):
    headers = {"X-Request-ID": request_id} if request_id else {}
    response = client.post("/predict", query_string=query, headers=headers,
                           data={"file": (io.BytesIO(image_bytes(colour=colour)), "image.png")})
    assert response.status_code == 200, response.get_json()
    return response.headers["X-Request-ID"], response.get_json()


def rows(app) -> list:
    records.flush(app)  # the records this app queued: its writer thread may not have written them yet
    with db.get_database(app).engine.connect() as connection:
        return connection.execute(select(db.predictions).order_by(db.predictions.c.id)).all()


def metric(text_body: str, name: str, **labels) -> float:
    """A sample's value in Prometheus text, 0 when absent (counters start there)."""
    for line in text_body.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        found_name, _, raw_labels = sample.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', raw_labels))
        if found_name == name and found == {k: str(v) for k, v in labels.items()}:
            return float(value)
    return 0.0


# --- Recording ---------------------------------------------------------------------------


def test_every_prediction_is_recorded_with_its_request_id_model_and_answer(make_app):
    app = make_app()
    request_id, answer = predict(app.test_client(), RED, request_id="client-chosen-id.1", top=2)
    assert request_id == "client-chosen-id.1"
    [row] = rows(app)
    assert (row.request_id, row.item, row.model_name, row.model_version) == ("client-chosen-id.1", 0, "tiny-colours", "0.0.1")
    assert (row.label, row.score) == (answer["label"], answer["score"]) == ("red", answer["top"][0]["score"])
    assert row.top == [[entry["label"], entry["score"]] for entry in answer["top"]] and len(row.top) == 2
    assert abs((db.utcnow() - row.created_at).total_seconds()) < 600  # UTC, not local time
    assert row.image is None and row.feedback_label is None  # no image unless KEEP_IMAGES


def test_a_batch_records_each_answered_image_in_its_place(make_app):
    app = make_app()
    body, content_type = form_body([("upload", image_bytes(colour=GREEN)), ("upload", b"not an image"), ("upload", image_bytes(colour=BLUE))])
    response = app.test_client().post("/predict/batch", data=body, content_type=content_type)
    assert response.status_code == 200
    recorded = rows(app)
    assert [(row.item, row.label) for row in recorded] == [(0, "green"), (2, "blue")]
    assert {row.request_id for row in recorded} == {response.headers["X-Request-ID"]}


def test_recording_off_records_nothing_but_still_counts_predictions(make_app):
    app = make_app(RECORD_PREDICTIONS=False)
    client = app.test_client()
    before = metric(client.get("/metrics").text, "model_predictions_total", label="blue", model="tiny-colours", version="0.0.1")
    predict(client, BLUE)
    after = metric(client.get("/metrics").text, "model_predictions_total", label="blue", model="tiny-colours", version="0.0.1")
    assert rows(app) == [] and after == before + 1


def test_a_repeated_client_request_id_keeps_the_first_record_and_counts_the_loss(make_app):
    app = make_app()
    client = app.test_client()
    before = metric(client.get("/metrics").text, "prediction_records_lost_total", reason="duplicate_request_id")
    predict(client, RED, request_id="same-id")
    predict(client, GREEN, request_id="same-id")  # still answered
    assert [row.label for row in rows(app)] == ["red"]
    assert metric(client.get("/metrics").text, "prediction_records_lost_total", reason="duplicate_request_id") == before + 1


def test_keep_images_stores_the_model_sized_copy_and_export_writes_those_with_feedback(make_app, tmp_path):
    app = make_app(KEEP_IMAGES=True)
    client = app.test_client()
    wrong_id, _ = predict(client, RED)
    right_id, _ = predict(client, GREEN)
    predict(client, BLUE)  # no feedback: not exported
    assert client.post("/feedback", json={"request_id": wrong_id, "label": "blue"}).status_code == 200
    assert client.post("/feedback", json={"request_id": right_id, "label": "green"}).status_code == 200
    stored = Image.open(io.BytesIO(rows(app)[0].image))
    assert (stored.format, stored.size, stored.getpixel((100, 100))) == ("PNG", (224, 224), RED)

    out = tmp_path / "exported"
    result = app.test_cli_runner().invoke(args=["export-feedback", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 images in 2 classes" in result.output
    files = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    assert files == sorted([f"blue/{wrong_id}.png", f"green/{right_id}.png"])
    assert Image.open(out / "blue" / f"{wrong_id}.png").getpixel((0, 0)) == RED  # the image, under the label users gave


def test_without_keep_images_export_says_why_it_wrote_nothing(make_app, tmp_path):
    app = make_app()
    client = app.test_client()
    request_id, _ = predict(client, RED)
    client.post("/feedback", json={"request_id": request_id, "label": "green"})
    result = app.test_cli_runner().invoke(args=["export-feedback", str(tmp_path / "out")])
    assert result.exit_code == 0
    assert "wrote 0 images" in result.output and "1 with feedback had no kept image (KEEP_IMAGES was off)" in result.output


def test_retention_keeps_the_newest_predictions_and_drops_old_ones(make_app, monkeypatch):
    monkeypatch.setattr(records, "PRUNE_EVERY_S", 0)  # prune after every insert, not once a minute
    app = make_app(RETENTION_MAX_PREDICTIONS=3, RETENTION_DAYS=7)
    client = app.test_client()
    ids = [predict(client, RED)[0] for _ in range(5)]
    assert [row.request_id for row in rows(app)] == ids[-3:]

    engine = db.get_database(app).engine
    with engine.begin() as connection:  # the oldest of those three, from 8 days ago
        connection.execute(update(db.predictions).where(db.predictions.c.request_id == ids[2])
                           .values(created_at=db.utcnow() - timedelta(days=8)))
    predict(client, GREEN)
    assert [row.request_id for row in rows(app)][:2] == ids[3:]


def test_the_schema_is_created_once_and_a_newer_one_is_refused(make_app):
    app = make_app()
    with db.get_database(app).engine.begin() as connection:
        assert connection.execute(select(db.schema_version.c.version)).scalars().all() == [db.SCHEMA_VERSION]
    make_app()  # a second start on the same database changes nothing
    with db.get_database(app).engine.begin() as connection:
        assert connection.execute(select(db.schema_version.c.version)).scalars().all() == [db.SCHEMA_VERSION]
        connection.execute(db.schema_version.insert().values(version=db.SCHEMA_VERSION + 1, applied_at=db.utcnow()))
    with pytest.raises(RuntimeError, match="newer than this code"):
        make_app()


# --- Feedback ----------------------------------------------------------------------------


def test_feedback_is_recorded_and_shows_in_monitoring_and_metrics(make_app, model_with_reference):
    app = make_app(MODEL_PATH=str(model_with_reference))
    client = app.test_client()
    red_id, _ = predict(client, RED)
    green_id, _ = predict(client, GREEN)
    predict(client, UNSURE_RED)

    right = client.post("/feedback", json={"request_id": red_id, "label": "red"})
    wrong = client.post("/feedback", json={"request_id": green_id, "label": "blue"})
    assert right.status_code == wrong.status_code == 200
    assert right.get_json() == {"request_id": red_id, "item": 0, "label": "red", "predicted": "red", "correct": True, "replaced": None}
    assert wrong.get_json()["correct"] is False

    report = client.get("/monitoring").get_json()
    assert report["model"] == {"name": "tiny-colours", "version": "0.1.0"}
    assert report["predictions"] == {"total": 3, "by_label": {"green": 1, "red": 2}}
    assert report["feedback"] == {"total": 2, "correct": 1, "accuracy": 0.5}
    assert report["low_confidence"] == {"threshold": 0.5, "total": 1, "share": 1 / 3}
    # Predicted: red 2/3, green 1/3, blue 0; validation: red 1/2, green 1/2, blue 0.
    expected_drift = 0.5 * (abs(2 / 3 - 0.5) + abs(1 / 3 - 0.5))
    assert report["drift"]["score"] == pytest.approx(expected_drift, abs=1e-6)
    assert report["drift"]["drifting"] is False  # under the default threshold, 0.2

    scraped = client.get("/metrics").text
    served = {"model": "tiny-colours", "version": "0.1.0"}
    assert metric(scraped, "monitoring_feedback_accuracy", **served) == 0.5
    assert metric(scraped, "monitoring_feedback_answers", **served) == 2
    assert metric(scraped, "monitoring_low_confidence_share", **served) == pytest.approx(1 / 3)
    assert metric(scraped, "monitoring_drift_score", **served) == pytest.approx(expected_drift, abs=1e-6)
    assert metric(scraped, "monitoring_window_predictions", label="red", **served) == 2
    assert metric(scraped, "model_predictions_total", label="red", **served) >= 2  # a counter for this process
    assert metric(scraped, "monitoring_database_up") == 1


def test_a_second_answer_replaces_the_first(make_app):
    app = make_app()
    client = app.test_client()
    request_id, _ = predict(client, RED)
    first = client.post("/feedback", json={"request_id": request_id, "label": "green"}).get_json()
    second = client.post("/feedback", json={"request_id": request_id, "label": "red"}).get_json()
    assert (first["replaced"], first["correct"]) == (None, False)
    assert (second["replaced"], second["correct"]) == ("green", True)
    [row] = rows(app)
    assert (row.feedback_label, row.feedback_count) == ("red", 2)
    assert client.get("/monitoring").get_json()["feedback"] == {"total": 1, "correct": 1, "accuracy": 1.0}


def test_feedback_for_an_image_in_a_batch_names_its_place(make_app):
    app = make_app()
    client = app.test_client()
    body, content_type = form_body([("upload", image_bytes(colour=GREEN)), ("upload", image_bytes(colour=BLUE))])
    request_id = client.post("/predict/batch", data=body, content_type=content_type).headers["X-Request-ID"]
    answer = client.post("/feedback", json={"request_id": request_id, "item": 1, "label": "blue"})
    assert answer.get_json()["predicted"] == "blue"
    assert [row.feedback_label for row in rows(app)] == [None, "blue"]
    assert client.post("/feedback", json={"request_id": request_id, "item": 2, "label": "blue"}).status_code == 404


def test_feedback_for_an_unknown_request_is_404(make_app):
    client = make_app().test_client()
    response = client.post("/feedback", json={"request_id": "never-seen", "label": "red"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_request_id"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "body, code",
    [
        ({"label": "purple"}, "unknown_label"),
        ({"label": ""}, "invalid_parameter"),
        ({"label": 3}, "invalid_parameter"),
        ({"request_id": ""}, "invalid_parameter"),
        ({"request_id": "has spaces"}, "invalid_parameter"),
        ({"request_id": "x" * 129}, "invalid_parameter"),
        ({"item": -1}, "invalid_parameter"),
        ({"item": True}, "invalid_parameter"),
        ({"item": 1.5}, "invalid_parameter"),
        ([], "invalid_parameter"),
        ("not json", "invalid_parameter"),
    ],
)
def test_bad_feedback_gets_a_json_400(make_app, body, code):
    app = make_app()
    client = app.test_client()
    request_id, _ = predict(client, RED)
    if isinstance(body, dict):
        response = client.post("/feedback", json={"request_id": request_id, "label": "red", **body})
    elif isinstance(body, list):
        response = client.post("/feedback", json=body)
    else:
        response = client.post("/feedback", data=body, content_type="text/plain")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code
    assert rows(app)[0].feedback_label is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_feedback_needs_the_api_key_like_predict(make_app):
    client = make_app(API_KEY=KEY).test_client()
    response = client.post("/predict", headers={"X-API-Key": KEY}, data={"file": (io.BytesIO(image_bytes()), "a.png")})
    request_id = response.headers["X-Request-ID"]
    assert client.post("/feedback", json={"request_id": request_id, "label": "red"}).status_code == 401
    answer = client.post("/feedback", headers={"Authorization": f"Bearer {KEY}"}, json={"request_id": request_id, "label": "red"})
    assert answer.status_code == 200


def test_feedback_survives_a_restart(make_app):
    before = make_app()
    request_id, _ = predict(before.test_client(), RED)
    assert before.test_client().post("/feedback", json={"request_id": request_id, "label": "green"}).status_code == 200
    db.get_database(before).engine.dispose()

    after = make_app().test_client()  # a new process would see the same: nothing is kept in memory
    assert after.get("/monitoring").get_json()["feedback"] == {"total": 1, "correct": 0, "accuracy": 0.0}
    again = after.post("/feedback", json={"request_id": request_id, "label": "red"}).get_json()
    assert again["replaced"] == "green" and again["correct"] is True


# --- Answers made in browsers (POST /device-predictions) -----------------------------------


def device_answer(answer_id: str, label: str = "red", **fields) -> dict:
    return {"id": answer_id, "label": label, "score": 0.9, "model_name": "tiny-colours", "model_version": "0.0.1",
            "created_at": "2026-01-01T12:00:00+01:00", **fields}


def test_answers_made_in_browsers_are_recorded_once_and_counted_apart(make_app):
    app = make_app()
    client = app.test_client()
    predict(client, RED)
    now = db.utcnow().isoformat() + "Z"
    batch = [device_answer("a-1", created_at=now), device_answer("a-2", "green", created_at="2999-01-01T00:00:00Z"),
             device_answer("a-1", created_at=now)]  # an id twice counts once
    first = client.post("/device-predictions", json={"predictions": batch})
    assert first.status_code == 200 and first.get_json() == {"recorded": 2, "already_recorded": 1}
    again = client.post("/device-predictions", json={"predictions": batch[:2]})  # sent twice: recorded once
    assert again.get_json() == {"recorded": 0, "already_recorded": 2}
    # Feedback names a browser's answer by its own id.
    assert client.post("/feedback", json={"request_id": "a-2", "label": "blue"}).get_json()["correct"] is False

    recorded = {row.request_id: row for row in rows(app)}
    assert len(recorded) == 3 and [row.source for row in recorded.values()].count("device") == 2
    assert recorded["a-2"].created_at <= db.utcnow()  # a clock ahead of the server's: now at the latest
    assert (recorded["a-1"].label, recorded["a-1"].score, recorded["a-1"].image) == ("red", 0.9, None)
    report = client.get("/monitoring").get_json()
    assert report["predictions"] == {"total": 3, "by_label": {"green": 1, "red": 2}}
    assert report["by_source"] == {"server": {"predictions": 1, "feedback": 0, "correct": 0},
                                   "device": {"predictions": 2, "feedback": 1, "correct": 0}}
    # Another model's answers are kept, and counted for that model only.
    client.post("/device-predictions", json={"predictions": [device_answer("old", model_version="0.0.0")]})
    assert client.get("/monitoring").get_json()["by_source"]["device"]["predictions"] == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("body", [
    {}, {"predictions": []}, {"predictions": [device_answer(str(n)) for n in range(101)]},
    {"predictions": [device_answer("has spaces")]}, {"predictions": [device_answer("x", score=1.5)]},
    {"predictions": [device_answer("x", label="")]}, {"predictions": [device_answer("x", created_at="yesterday")]},
    {"predictions": [{"id": "x", "label": "red", "score": 0.5}]}, [device_answer("x")],
], ids=["empty", "none", "too-many", "bad-id", "bad-score", "no-label", "bad-time", "no-model", "a-list"])
def test_bad_device_answers_get_a_json_400_and_nothing_is_recorded(make_app, body):
    app = make_app()
    response = app.test_client().post("/device-predictions", json=body)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_parameter"
    assert rows(app) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_device_answers_need_the_api_key_like_feedback(make_app):
    client = make_app(API_KEY=KEY).test_client()
    body = {"predictions": [device_answer("a-1")]}
    assert client.post("/device-predictions", json=body).status_code == 401
    assert client.post("/device-predictions", headers={"X-API-Key": KEY}, json=body).status_code == 200


# --- GET /monitoring ---------------------------------------------------------------------


def test_the_window_counts_only_its_own_predictions(make_app):
    app = make_app()
    client = app.test_client()
    old_id, _ = predict(client, RED)
    predict(client, GREEN)
    records.flush(app)
    with db.get_database(app).engine.begin() as connection:
        connection.execute(update(db.predictions).where(db.predictions.c.request_id == old_id)
                           .values(created_at=db.utcnow() - timedelta(days=2)))
    assert client.get("/monitoring?window=1d").get_json()["predictions"] == {"total": 1, "by_label": {"green": 1}}
    assert client.get("/monitoring?window=3d").get_json()["predictions"]["total"] == 2
    report = client.get("/monitoring?window=90m").get_json()
    assert report["window"]["seconds"] == 5400


def test_monitoring_reports_only_the_served_model_version(make_app, tiny_model_v2_path):
    predict(make_app().test_client(), RED)
    newer = make_app(MODEL_PATH=str(tiny_model_v2_path)).test_client()
    predict(newer, BLUE)
    report = newer.get("/monitoring").get_json()
    assert report["model"]["version"] == "0.0.2" and report["predictions"] == {"total": 1, "by_label": {"blue": 1}}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_model_without_a_validation_distribution_says_so(make_app):
    client = make_app().test_client()
    predict(client, RED)
    drift = client.get("/monitoring").get_json()["drift"]
    assert drift["score"] is None and drift["drifting"] is None
    assert REFERENCE_KEY in drift["reason"] and "re-export" in drift["reason"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_drift_is_flagged_past_its_threshold(make_app, model_with_reference):
    client = make_app(MODEL_PATH=str(model_with_reference), DRIFT_THRESHOLD=0.3).test_client()
    for _ in range(3):
        predict(client, BLUE)  # a class that validation never predicted
    drift = client.get("/monitoring").get_json()["drift"]
    assert drift["score"] == pytest.approx(0.5 * (0.5 + 0.5 + 1.0))
    assert drift["drifting"] is True and drift["threshold"] == 0.3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("window", ["0h", "5", "1w", "-1d", "9999999d", "1.5h"])
def test_a_bad_window_gets_a_json_400(make_app, window):
    response = make_app().test_client().get("/monitoring", query_string={"window": window})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bad_monitoring_setting_stops_start_up(make_app):
    for setting in ({"MONITORING_WINDOW": "soon"}, {"DRIFT_THRESHOLD": 2}, {"RETENTION_DAYS": 0}):
        with pytest.raises(ValueError):
            make_app(**setting)


# --- Where the database is ---------------------------------------------------------------


def test_database_url_forms():
    assert db.database_url({}, "/srv/app/instance") == "sqlite:////srv/app/instance/monitoring.sqlite"
    assert db.database_url({"DATABASE_URL": "sqlite:////data/m.db"}, "/x") == "sqlite:////data/m.db"
    heroku = db.database_url({"DATABASE_URL": "postgres://user:secret@db.example:5432/app"}, "/x")
    assert heroku == "postgresql+psycopg://user:secret@db.example:5432/app"
    for bad in ("mysql://u@h/d", "not a url", "sqlite://"):
        with pytest.raises(ValueError, match="DATABASE_URL"):
            db.database_url({"DATABASE_URL": bad}, "/x")


def test_herokus_postgres_scheme_reaches_a_real_server(postgres, tiny_model_path):
    name = postgres.new_database().partition("@/")[2].partition("?")[0]
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                      "DATABASE_URL": postgres.url(name, scheme="postgres")})
    try:
        assert db.get_database(app).dialect == "postgresql"
        predict(app.test_client(), RED)
        assert len(rows(app)) == 1
    finally:
        db.get_database(app).engine.dispose()


# --- The database goes away --------------------------------------------------------------


@pytest.fixture
def on_postgres(postgres, tiny_model_path):
    """An app recording into a new database of ``postgres``, and its test client."""
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                      "DATABASE_URL": postgres.new_database()})
    yield app, app.test_client()
    db.get_database(app).engine.dispose()


def records_lost(client) -> float:
    return metric(client.get("/metrics").text, "prediction_records_lost_total", reason="database_unavailable")


def test_a_stopped_database_fails_no_prediction(postgres, on_postgres, monkeypatch, caplog):
    monkeypatch.setattr(records, "RETRY_AFTER_S", 0)  # try the database again at once when it is back
    app, client = on_postgres
    try:
        predict(client, RED)
        lost_before = records_lost(client)
        postgres.stop()

        request_id, answer = predict(client, GREEN)  # answered all the same
        assert answer["label"] == "green"
        scraped = client.get("/metrics")
        assert scraped.status_code == 200
        assert metric(scraped.text, "prediction_records_lost_total", reason="database_unavailable") == lost_before + 1
        assert metric(scraped.text, "monitoring_database_up") == 0
        assert f"prediction {request_id} not recorded" in caplog.text
        for response in (client.post("/feedback", json={"request_id": request_id, "label": "green"}), client.get("/monitoring")):
            assert response.status_code == 503 and response.get_json()["error"]["code"] == "database_unavailable"
    finally:
        postgres.start()
    predict(client, BLUE)  # recorded again once the database is back
    assert client.get("/monitoring").get_json()["predictions"] == {"total": 2, "by_label": {"blue": 1, "red": 1}}


def test_a_database_restart_between_requests_loses_no_record(postgres, on_postgres):
    """The pooled connection dies with the old server; the next record takes a new one."""
    app, client = on_postgres
    predict(client, RED)
    lost = records_lost(client)
    postgres.stop()
    postgres.start()
    predict(client, GREEN)
    assert [row.label for row in rows(app)] == ["red", "green"]
    assert records_lost(client) == lost


def test_a_sqlite_file_that_cannot_be_made_fails_no_prediction(tiny_model_path, tmp_path, caplog):
    """A read-only folder (a container whose app user cannot write there), say."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                      "DATABASE_URL": f"sqlite:///{blocker}/monitoring.sqlite"})
    client = app.test_client()
    lost = metric(client.get("/metrics").text, "prediction_records_lost_total", reason="database_unavailable")
    assert predict(client, BLUE)[1]["label"] == "blue"
    assert metric(client.get("/metrics").text, "prediction_records_lost_total", reason="database_unavailable") == lost + 1
    assert "cannot create the folder of the monitoring database" in caplog.text


def test_a_database_down_at_start_is_set_up_when_it_comes_back(postgres, tiny_model_path, monkeypatch):
    monkeypatch.setattr(records, "RETRY_AFTER_S", 0)
    url = postgres.new_database()
    postgres.stop()
    try:
        app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1, "DATABASE_URL": url})
        client = app.test_client()
        assert client.get("/health").status_code == 200  # it starts, and serves
        predict(client, RED)
        records.flush(app)  # written now, while the database is down: lost
    finally:
        postgres.start()
    predict(client, GREEN)
    assert [row.label for row in rows(app)] == ["green"]
    db.get_database(app).engine.dispose()


# --- The writer: records queued by requests, written in batches ---------------------------


def database_rows(app) -> list:
    """What the database holds now, without flushing this app's queue first."""
    with db.get_database(app).engine.connect() as connection:
        return connection.execute(select(db.predictions).order_by(db.predictions.c.id)).all()


def test_queued_records_are_written_in_one_batch_complete(make_app):
    app = make_app(RECORD_FLUSH_MS=600_000)  # the thread waits: only the reader's flush writes them
    client = app.test_client()
    written = metric(client.get("/metrics").text, "prediction_records_total")
    answers = [predict(client, colour, top=2) for colour in (RED, GREEN, BLUE) * 4]
    assert database_rows(app) == []  # queued, not written: no request waited for the database
    assert client.get("/monitoring").get_json()["predictions"]["total"] == 12  # a read flushes first
    recorded = database_rows(app)
    assert [(row.request_id, row.label, row.score, row.top) for row in recorded] == [
        (request_id, answer["label"], answer["score"], [[entry["label"], entry["score"]] for entry in answer["top"]])
        for request_id, answer in answers
    ]
    assert len({row.created_at for row in recorded}) >= 1 and all(row.model_version == "0.0.1" for row in recorded)
    assert metric(client.get("/metrics").text, "prediction_records_total") == written + 12


def test_the_writer_thread_writes_without_a_reader(make_app):
    app = make_app(RECORD_FLUSH_MS=20)
    request_id, _ = predict(app.test_client(), GREEN)
    wait_until(lambda: [row.request_id for row in database_rows(app)] == [request_id], timeout=30,
               what="the writer thread to write the record")


def test_feedback_finds_a_prediction_still_in_the_queue(make_app):
    app = make_app(RECORD_FLUSH_MS=600_000)
    client = app.test_client()
    request_id, _ = predict(client, RED)
    assert database_rows(app) == []
    response = client.post("/feedback", json={"request_id": request_id, "label": "blue"})
    assert response.status_code == 200 and response.get_json()["predicted"] == "red"


def test_a_full_queue_answers_every_prediction_and_counts_the_loss(make_app, caplog):
    app = make_app(RECORD_QUEUE_LIMIT=3, RECORD_FLUSH_MS=600_000)
    client = app.test_client()
    lost = metric(client.get("/metrics").text, "prediction_records_lost_total", reason="queue_full")
    ids = [predict(client, BLUE)[0] for _ in range(5)]  # every one answered
    assert f"prediction {ids[3]} not recorded: the record queue is full" in caplog.text
    assert metric(client.get("/metrics").text, "prediction_records_lost_total", reason="queue_full") == lost + 2
    assert [row.request_id for row in rows(app)] == ids[:3]
    predict(client, BLUE)  # the queue was emptied: room again
    assert len(rows(app)) == 4


def test_a_batch_the_stopped_database_refuses_is_counted_and_logged(postgres, tiny_model_path, caplog):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                      "DATABASE_URL": postgres.new_database(), "RECORD_FLUSH_MS": 600_000})
    client = app.test_client()
    try:
        lost = metric(client.get("/metrics").text, "prediction_records_lost_total", reason="database_unavailable")
        ids = [predict(client, colour)[0] for colour in (RED, GREEN, BLUE)]
        postgres.stop()
        try:
            scraped = client.get("/metrics")  # the scrape flushes the queue first
            assert scraped.status_code == 200
            assert metric(scraped.text, "prediction_records_lost_total", reason="database_unavailable") == lost + 3
            assert "not recorded, the monitoring database failed" in caplog.text
            assert all(request_id in caplog.text for request_id in ids)
            assert predict(client, RED)[1]["label"] == "red"  # within RETRY_AFTER_S: counted at once
            assert metric(client.get("/metrics").text, "prediction_records_lost_total",
                          reason="database_unavailable") == lost + 4
        finally:
            postgres.start()
    finally:
        records.writer(app).close()
        db.get_database(app).engine.dispose()


@pytest.mark.slow
def test_a_graceful_stop_of_the_server_writes_every_queued_record(database_url, tiny_model_path, tmp_path):
    """SIGTERM, as a deploy or restart sends: each worker writes its queue before it exits."""
    log = tmp_path / "gunicorn.log"
    env = {"MODEL_PATH": str(tiny_model_path), "DATABASE_URL": database_url, "RECORD_FLUSH_MS": "600000"}
    body, content_type = form_body([("upload", image_bytes(colour=GREEN))])
    ids = [f"before-stop-{index}" for index in range(30)]
    engine = db.make_engine(db.database_url({"DATABASE_URL": database_url}, str(tmp_path)))
    try:
        with procfile_server(env=env, log_path=log) as (url, server):
            wait_until(lambda: log.read_text().count("loaded in") == 2, timeout=60, what="both workers to load")
            statuses = []
            threads = [threading.Thread(target=lambda chunk=ids[start::3]: statuses.extend(
                send(url, "POST", "/predict", body, {"Content-Type": content_type, "X-Request-ID": request_id})[0]
                for request_id in chunk)) for start in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert statuses == [200] * len(ids)
            with engine.connect() as connection:  # queued in the workers, not yet written
                assert connection.execute(select(db.predictions.c.id)).all() == []
            os.killpg(server.process.pid, signal.SIGTERM)
            server.process.wait(timeout=60)
        assert len(pids_of(log, "/predict")) == 2, "one worker took every prediction"
        with engine.connect() as connection:
            written = connection.execute(select(db.predictions.c.request_id)).scalars().all()
        assert sorted(written) == sorted(ids)
        assert "not recorded" not in log.read_text()
    finally:
        engine.dispose()


# --- The real server: two workers, one database ------------------------------------------


@pytest.mark.slow
def test_concurrent_feedback_through_both_workers_loses_nothing(database_url, tiny_model_path, tmp_path):
    log = tmp_path / "gunicorn.log"
    env = {"MODEL_PATH": str(tiny_model_path), "DATABASE_URL": database_url}
    per_round, clients = 40, 8
    body, content_type = form_body([("upload", image_bytes(colour=RED))])
    statuses: list[int] = []
    given: dict[str, str] = {}

    def in_threads(work, items):
        def run(chunk):
            for item in chunk:
                statuses.append(work(item)[0])

        threads = [threading.Thread(target=run, args=(items[start::clients],)) for start in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    with procfile_server(env=env, log_path=log) as (url, _):
        wait_until(lambda: log.read_text().count("loaded in") == 2, timeout=60, what="both workers to load")

        def prediction(request_id):
            return send(url, "POST", "/predict", body, {"Content-Type": content_type, "X-Request-ID": request_id})

        def feedback(request_id):
            payload = json.dumps({"request_id": request_id, "label": given[request_id]}).encode()
            return send(url, "POST", "/feedback", payload, {"Content-Type": "application/json"})

        # Rounds of predictions, then their feedback all at once, until both workers took some.
        for round_ in range(5):
            ids = [f"round{round_}-{index}" for index in range(per_round)]
            given.update({request_id: TINY_LABELS[index % 3] for index, request_id in enumerate(ids)})
            in_threads(prediction, ids)
            in_threads(feedback, ids)
            if len(pids_of(log, "/feedback")) == 2:
                break
        status, report = send(url, "GET", "/monitoring")
        _, scraped = send(url, "GET", "/metrics")
    assert len(pids_of(log, "/feedback")) == 2, "one worker took all the feedback"
    total = len(given)
    assert statuses == [200] * (2 * total)
    assert status == 200 and report["predictions"]["total"] == total
    right = list(given.values()).count("red")
    assert report["feedback"] == {"total": total, "correct": right, "accuracy": right / total}
    served = {"model": "tiny-colours", "version": "0.0.1"}
    assert metric(scraped.decode(), "model_predictions_total", label="red", **served) == total  # summed over workers
    assert metric(scraped.decode(), "monitoring_feedback_answers", **served) == total


def pids_of(log: Path, path: str) -> set[int]:
    """The worker processes whose access-log lines show ``path``."""
    entries = [json.loads(line[line.index("{"):]) for line in log.read_text().splitlines() if '"path"' in line]
    return {entry["pid"] for entry in entries if entry.get("path") == path}


# --- The loop: exported feedback as training data ----------------------------------------


def test_exported_feedback_joins_the_training_side_only(data_dir, tmp_path):
    from training.data import stratified_split, with_extra_training_images

    split = stratified_split(data_dir / "ucmerced", images_per_class=4)
    exported = tmp_path / "feedback"
    (exported / "river").mkdir(parents=True)
    Image.new("RGB", (224, 224), BLUE).save(exported / "river" / "some-request-id.png")
    extended = with_extra_training_images(split, exported)
    assert extended.train_files == split.train_files + (exported / "river" / "some-request-id.png",)
    assert extended.train_targets[-1] == split.classes.index("river")
    assert (extended.val_files, extended.val_targets) == (split.val_files, split.val_targets)

    (exported / "volcano").mkdir()
    (exported / "volcano" / "x.png").write_bytes((exported / "river" / "some-request-id.png").read_bytes())
    with pytest.raises(ValueError, match="classes the data set lacks: volcano"):
        with_extra_training_images(split, exported)
