"""A candidate model beside the served one (web/served_model.py, web/api.py's classify, web/records.py,
web/monitoring.py's candidate section, classifier/verdict.py), and promoting it (web/cli.py).

Through Flask's test client; tests/test_rollout_server.py runs both modes and a promotion on
the Procfile server. Every figure of /monitoring is checked against what the test counted
from the answers it got and the feedback it gave (``expected_figures``).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from sqlalchemy import Index, MetaData, Table, UniqueConstraint, create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from app import create_app
from classifier.errors import ModelContractError
from classifier.verdict import (
    KEEP, MIN_FEEDBACK, PROMOTE, WAIT, fisher_p, mcnemar_p, paired_verdict, unpaired_verdict,
)
from training.onnx_variants import export_onnx
from web import db, records
from web.settings import SettingError, read_settings

from testing.multipart import form_body
from testing.samples import export_tiny_model, image_bytes, model_answer
from testing.postgres import PostgresServer

from .test_model_update import gunicorn_stand_in, wait_for  # noqa: F401 (a fixture)
from .test_monitoring import metric

RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)
# The candidate is the colour model with its third class named "teal": it says "teal" where the
# served model says "blue", and agrees on the rest. Its labels differ: compared by label.
CANDIDATE_LABELS = ["red", "green", "teal"]
THRESHOLD = 0.5  # LOW_CONFIDENCE_THRESHOLD's default
ROLES = {"tiny-colours/0.0.1": "served", "tiny-colours/0.1.0": "candidate"}  # by X-Model-Version


@pytest.fixture(scope="session")
def candidate_path(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("candidate") / "candidate.zip", version="0.1.0",
                             labels=CANDIDATE_LABELS)


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def make_app(tiny_model_path, tmp_path):
    """Apps serving the tiny model, on this test's SQLite file unless told otherwise."""
    apps = []

    def make(**config):
        app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                          "DATABASE_URL": f"sqlite:///{tmp_path / 'monitoring.sqlite'}", **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        records.writer(app).close()
        db.get_database(app).engine.dispose()


@dataclass
class Seen:
    """One image as the test saw it: the model that answered and its answer, the candidate's own
    answer when it shadowed the request (computed here by the pipeline), the truth sent as feedback."""

    model: str  # "served" or "candidate", from X-Model-Version
    label: str
    score: float
    shadow: tuple[str, float] | None = None
    truth: str | None = None


def expected_figures(seen: list[Seen], mode: str) -> dict:
    """/monitoring's candidate figures, counted from what the test saw."""
    if mode == "shadow":
        both = [s for s in seen if s.shadow]
        answers = {"served": [(s.label, s.score, s.truth) for s in both],
                   "candidate": [(*s.shadow, s.truth) for s in both]}
        agreed = sum(s.label == s.shadow[0] for s in both)
    else:  # each model's own answers, from the candidate's first on
        first = next(i for i, s in enumerate(seen) if s.model == "candidate")
        answers = {role: [(s.label, s.score, s.truth) for s in seen[first:] if s.model == role]
                   for role in ("served", "candidate")}
        both, agreed = [], 0
    figures = {}
    for role, rows in answers.items():
        judged = [(label, truth) for label, _, truth in rows if truth]
        correct = sum(label == truth for label, truth in judged)
        low = sum(score < THRESHOLD for _, score, _ in rows)
        share = low / len(rows) if rows else None
        figures[role] = {
            "predictions": {"total": len(rows), "by_label": dict(Counter(label for label, _, _ in rows))},
            "feedback": {"total": len(judged), "correct": correct,
                         "accuracy": correct / len(judged) if judged else None},
            "low_confidence": {"threshold": THRESHOLD, "total": low, "share": share},
        }
    return {"compared": len(both), "agreement": agreed / len(both) if both else None, "models": figures}


def check_report(candidate: dict, seen: list[Seen], mode: str, share: float) -> None:
    """Every figure of ``candidate`` (from /monitoring) against the test's own count."""
    expected = expected_figures(seen, mode)
    assert candidate["mode"] == mode and candidate["share"] == share
    assert candidate["model"] == {"name": "tiny-colours", "version": "0.1.0"}
    assert candidate["compared"] == expected["compared"]
    assert candidate["agreement"] == pytest.approx(expected["agreement"])
    for role, figures in expected["models"].items():
        got = candidate["models"][role]
        assert got["version"] == {"served": "0.0.1", "candidate": "0.1.0"}[role]
        assert got["predictions"] == figures["predictions"], role
        assert got["feedback"] == pytest.approx(figures["feedback"]), role
        assert got["low_confidence"] == pytest.approx(figures["low_confidence"]), role
        latency = got["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"], (role, latency)


def answer(client, colour, headers=None, top=None):
    """POST /predict; the response read whole and closed, as a server does (the shadow runs then)."""
    response = client.post("/predict", data=image_bytes(colour=colour), buffered=True,
                           query_string={"top": top} if top else {},
                           headers={"Content-Type": "image/png", **(headers or {})})
    assert response.status_code == 200, response.get_json()
    return response


def role_of(response) -> str:
    return ROLES[response.headers["X-Model-Version"]]


def give_feedback(client, response, truth: str) -> None:
    sent = client.post("/feedback", json={"request_id": response.headers["X-Request-ID"], "label": truth})
    assert sent.status_code == 200, sent.get_json()
    assert sent.get_json()["predicted"] == response.get_json()["label"]  # the answer the client saw


# --- Settings and start-up -----------------------------------------------------------------


@pytest.mark.parametrize("name, raw, says", [
    ("CANDIDATE_MODE", "blue-green", "CANDIDATE_MODE must be one of shadow, canary"),
    ("CANDIDATE_SHARE", "1.5", "CANDIDATE_SHARE must be a number from 0 to 1"),
    ("CANDIDATE_SHARE", "ten percent", "CANDIDATE_SHARE must be a number"),
])
def test_a_bad_candidate_setting_is_refused(name, raw, says):
    with pytest.raises(SettingError, match=says):
        read_settings({name: raw})


def test_a_candidate_that_is_the_served_model_is_refused_at_start(make_app, tiny_model_path, tmp_path):
    twin = tmp_path / "twin.zip"
    shutil.copyfile(tiny_model_path, twin)
    with pytest.raises(ModelContractError, match=r"twin.zip is tiny-colours 0.0.1, the model MODEL_PATH"):
        make_app(CANDIDATE_MODEL_PATH=str(twin))


def test_no_candidate_file_means_no_candidate(make_app, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    client = make_app(CANDIDATE_MODEL_PATH=str(tmp_path / "promoted-away.zip")).test_client()
    assert "promoted-away.zip does not exist" in caplog.text
    assert role_of(answer(client, BLUE)) == "served"
    assert client.get("/monitoring").get_json()["candidate"] is None


def test_the_candidate_is_served_by_the_same_engine_rules(make_app, tiny_model_path, candidate_path,
                                                         tmp_path):
    served_copy = export_onnx(tiny_model_path, tmp_path / "served.onnx")
    refusal = "INFERENCE_ENGINE=onnxruntime, but .*candidate.onnx does not exist"
    with pytest.raises(ModelContractError, match=refusal):
        make_app(ONNX_MODEL_PATH=str(served_copy), INFERENCE_ENGINE="onnxruntime",
                 CANDIDATE_MODEL_PATH=str(candidate_path))
    folder = tmp_path / "candidate"
    folder.mkdir()
    candidate = shutil.copyfile(candidate_path, folder / "candidate.zip")
    export_onnx(candidate, folder / "candidate.onnx")  # its copy: beside it, the same name
    app = make_app(ONNX_MODEL_PATH=str(served_copy), INFERENCE_ENGINE="onnxruntime",
                   CANDIDATE_MODEL_PATH=str(candidate))
    assert app.extensions["candidate"].engine.name == "onnxruntime"
    assert "candidate.onnx answers as candidate.zip does" in app.extensions["candidate"].engine_reason


# --- Shadow --------------------------------------------------------------------------------


def test_shadow_answers_with_the_served_model_and_scores_both(make_app, candidate_path):
    client = make_app(CANDIDATE_MODEL_PATH=str(candidate_path), CANDIDATE_SHARE=1).test_client()
    plan = [(BLUE, "teal")] * MIN_FEEDBACK + [(RED, "red")] * 4 + [(GREY, "green")] * 3
    plan += [(RED, None), (BLUE, None)]
    seen = []
    for colour, truth in plan:
        response = answer(client, colour)
        body = response.get_json()
        assert role_of(response) == "served"
        assert body == model_answer(image_bytes(colour=colour), client.application.config["MODEL_PATH"])
        shadow = model_answer(image_bytes(colour=colour), candidate_path)
        seen.append(Seen("served", body["label"], body["score"], (shadow["label"], shadow["score"]), truth))
        if truth:
            give_feedback(client, response, truth)
    report = client.get("/monitoring").get_json()
    candidate = report["candidate"]
    check_report(candidate, seen, "shadow", 1.0)
    # The served model's own section counts only its own answers.
    assert report["predictions"]["total"] == len(plan) and report["model"]["version"] == "0.0.1"
    # Only the candidate was right on the blue images ("teal"), neither on grey, both on red.
    assert candidate["verdict"]["decision"] == PROMOTE
    assert candidate["verdict"]["p_value"] == pytest.approx(2 * 0.5 ** MIN_FEEDBACK)
    counts = f"only the candidate was right on {MIN_FEEDBACK}, only the served model on 0"
    assert counts in candidate["verdict"]["reason"]
    assert "McNemar" in candidate["verdict"]["rule"]


def test_shadow_takes_its_share_and_leaves_the_rest_alone(make_app, candidate_path):
    client = make_app(CANDIDATE_MODEL_PATH=str(candidate_path), CANDIDATE_SHARE=0).test_client()
    for _ in range(5):
        assert role_of(answer(client, BLUE)) == "served"
    candidate = client.get("/monitoring").get_json()["candidate"]
    assert candidate["compared"] == 0 and candidate["models"]["candidate"]["predictions"]["total"] == 0
    assert candidate["verdict"]["decision"] == WAIT


def test_a_shadowed_batch_names_its_model_and_records_each_image(make_app, candidate_path):
    app = make_app(CANDIDATE_MODEL_PATH=str(candidate_path), CANDIDATE_SHARE=1, KEEP_IMAGES=True)
    client = app.test_client()
    body, content_type = form_body([("a.png", image_bytes(colour=RED)), ("b.png", b"not an image"),
                                    ("c.png", image_bytes(colour=BLUE))])
    response = client.post("/predict/batch", data=body, content_type=content_type, buffered=True)
    assert response.status_code == 200 and response.headers["X-Model-Version"] == "tiny-colours/0.0.1"
    records.flush(app)
    with db.get_database(app).engine.connect() as connection:
        order = (db.predictions.c.shadow, db.predictions.c.item)
        rows = connection.execute(select(db.predictions).order_by(*order)).all()
    assert [(row.item, row.model_version, row.label, row.shadow) for row in rows] == [
        (0, "0.0.1", "red", False), (2, "0.0.1", "blue", False),
        (0, "0.1.0", "red", True), (2, "0.1.0", "teal", True)]
    assert {row.request_id for row in rows} == {response.headers["X-Request-ID"]}
    # The image is kept once, with the answer the client got; export-feedback writes it once.
    assert [row.image is not None for row in rows] == [True, True, False, False]
    assert all(row.latency_ms > 0 for row in rows)


def test_feedback_takes_the_candidates_new_class(make_app, candidate_path):
    client = make_app(CANDIDATE_MODEL_PATH=str(candidate_path), CANDIDATE_SHARE=1).test_client()
    response = answer(client, BLUE)
    sent = client.post("/feedback", json={"request_id": response.headers["X-Request-ID"], "label": "teal"})
    assert sent.get_json() == {"request_id": response.headers["X-Request-ID"], "item": 0, "label": "teal",
                               "predicted": "blue", "correct": False, "replaced": None}
    refused = client.post("/feedback", json={"request_id": sent.get_json()["request_id"], "label": "mauve"})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "unknown_label"


# --- Canary --------------------------------------------------------------------------------


def canary_client(make_app, candidate_path):
    app = make_app(CANDIDATE_MODEL_PATH=str(candidate_path), CANDIDATE_MODE="canary", CANDIDATE_SHARE=0.5)
    return app.test_client()


def test_canary_answers_its_share_with_the_candidate(make_app, candidate_path):
    client = canary_client(make_app, candidate_path)
    seen = []
    for index in range(60):
        colour, truth = (BLUE, "teal") if index % 3 else (GREY, None)
        response = answer(client, colour, top=1)
        body = response.get_json()
        assert len(body["top"]) == 1  # each model answers as asked
        seen.append(Seen(role_of(response), body["label"], body["score"], truth=truth))
        expected = model_answer(image_bytes(colour=colour), candidate_path if seen[-1].model == "candidate"
                                else client.application.config["MODEL_PATH"], top_k=1)
        assert body == expected
        if truth:
            give_feedback(client, response, truth)
    assert {s.model for s in seen} == {"served", "candidate"}  # 2 in 2**60 runs fail here
    candidate = client.get("/monitoring").get_json()["candidate"]
    check_report(candidate, seen, "canary", 0.5)
    assert "Fisher" in candidate["verdict"]["rule"]


def test_canary_is_sticky_per_client_and_judged_on_each_models_answers(make_app, candidate_path):
    client = canary_client(make_app, candidate_path)
    seen, by_client, index = [], {}, 0
    verdicts = []
    # Blue images: only the candidate says "teal", which users say is right.
    while judged_fewest(seen) < MIN_FEEDBACK:
        client_id = f"client-{index}"
        index += 1
        for _ in range(2):  # the same client, the same model, whichever worker
            response = answer(client, BLUE, headers={"X-Client-ID": client_id})
            by_client.setdefault(client_id, set()).add(role_of(response))
            body = response.get_json()
            seen.append(Seen(role_of(response), body["label"], body["score"], truth="teal"))
            give_feedback(client, response, "teal")
        verdicts.append(client.get("/monitoring").get_json()["candidate"]["verdict"]["decision"])
    assert all(len(models) == 1 for models in by_client.values()), by_client
    assert verdicts[:-1] == [WAIT] * (len(verdicts) - 1)  # until each model had MIN_FEEDBACK answers judged
    candidate = client.get("/monitoring").get_json()["candidate"]
    check_report(candidate, seen, "canary", 0.5)
    assert candidate["verdict"]["decision"] == PROMOTE and candidate["verdict"]["p_value"] < 0.05


def judged_fewest(seen: list[Seen]) -> int:
    """The fewer of the two models' answers with feedback that the canary's verdict weighs."""
    if not any(s.model == "candidate" for s in seen):
        return 0
    models = expected_figures(seen, "canary")["models"].values()
    return min(figures["feedback"]["total"] for figures in models)


def test_monitoring_and_metrics_agree(make_app, candidate_path):
    client = make_app(CANDIDATE_MODEL_PATH=str(candidate_path), CANDIDATE_SHARE=1).test_client()
    for colour in (RED, BLUE, GREY):
        give_feedback(client, answer(client, colour), "red")
    candidate = client.get("/monitoring").get_json()["candidate"]
    metrics = client.get("/metrics").get_data(as_text=True)
    served, mine = candidate["models"]["served"], candidate["models"]["candidate"]

    def value(name, **labels):
        return pytest.approx(metric(metrics, name, **labels))

    own = {"model": "tiny-colours", "version": "0.1.0"}
    assert value("monitoring_candidate_compared", **own) == candidate["compared"] == 3
    assert value("monitoring_candidate_agreement", **own) == candidate["agreement"]
    assert value("monitoring_candidate_verdict", decision=WAIT, **own) == 1
    assert value("monitoring_candidate_verdict", decision=PROMOTE, **own) == 0
    for role, figures in (("served", served), ("candidate", mine)):
        labels = {"model": "tiny-colours", "version": figures["version"], "role": role}
        feedback, low, latency = figures["feedback"], figures["low_confidence"], figures["latency_ms"]
        assert value("monitoring_candidate_feedback_accuracy", **labels) == feedback["accuracy"]
        assert value("monitoring_candidate_feedback_answers", **labels) == feedback["total"] == 3
        assert value("monitoring_candidate_low_confidence_share", **labels) == low["share"]
        assert value("monitoring_candidate_latency_ms", quantile="0.95", **labels) == latency["p95"]
        assert value("monitoring_candidate_feedback_correct", **labels) == feedback["correct"]
        for label, count in figures["predictions"]["by_label"].items():
            assert value("monitoring_candidate_window_predictions", label=label, **labels) == count
    report = client.get("/monitoring").get_json()
    served_model = {"model": "tiny-colours", "version": "0.0.1"}
    assert value("monitoring_latency_ms", quantile="0.5", **served_model) == report["latency_ms"]["p50"]


def test_every_answer_names_its_model(make_app):
    client = make_app().test_client()
    response = answer(client, RED, headers={"Origin": "https://elsewhere.example"})
    assert response.headers["X-Model-Version"] == "tiny-colours/0.0.1"
    assert "x-model-version" in response.headers["Access-Control-Expose-Headers"].lower()  # a page may read it
    body, content_type = form_body([("a.png", image_bytes(colour=RED))])
    batch = client.post("/predict/batch", data=body, content_type=content_type)
    assert batch.headers["X-Model-Version"] == "tiny-colours/0.0.1"


# --- The verdict's rule --------------------------------------------------------------------


def exact_binomial_two_sided(b: int, c: int) -> float:
    n = b + c
    return min(1.0, float(2 * sum(Fraction(math.comb(n, k), 2 ** n) for k in range(min(b, c) + 1))))


def exact_fisher_two_sided(a: int, b: int, c: int, d: int) -> float:
    row, right, total = a + b, a + c, a + b + c + d

    def chance(x):
        return Fraction(math.comb(row, x) * math.comb(total - row, right - x), math.comb(total, right))

    tables = [chance(x) for x in range(max(0, right - (total - row)), min(row, right) + 1)]
    return float(sum(value for value in tables if value <= chance(a)))


@pytest.mark.parametrize("b, c", [(0, 0), (0, 1), (3, 12), (12, 3), (20, 25), (0, 40), (150, 190)])
def test_mcnemars_exact_test(b, c):
    assert mcnemar_p(b, c) == pytest.approx(exact_binomial_two_sided(b, c), rel=1e-9)


@pytest.mark.parametrize("table", [(1, 9, 11, 3), (8, 2, 1, 5), (30, 0, 0, 30), (25, 5, 20, 10),
                                   (90, 10, 85, 15), (0, 0, 3, 4)])
def test_fishers_exact_test(table):
    assert fisher_p(*table) == pytest.approx(exact_fisher_two_sided(*table), rel=1e-9)


def test_the_verdict_waits_for_its_evidence_and_names_the_better_model():
    assert paired_verdict(MIN_FEEDBACK - 1, 0, MIN_FEEDBACK - 1)["decision"] == WAIT
    assert paired_verdict(MIN_FEEDBACK, 0, 10)["decision"] == PROMOTE
    assert paired_verdict(MIN_FEEDBACK, 10, 0)["decision"] == KEEP
    assert paired_verdict(100, 5, 6)["decision"] == WAIT  # a difference chance explains
    assert unpaired_verdict(0, MIN_FEEDBACK, MIN_FEEDBACK - 1, MIN_FEEDBACK - 1)["decision"] == WAIT
    assert unpaired_verdict(10, MIN_FEEDBACK, 28, MIN_FEEDBACK)["decision"] == PROMOTE
    assert unpaired_verdict(28, MIN_FEEDBACK, 10, MIN_FEEDBACK)["decision"] == KEEP
    assert unpaired_verdict(20, MIN_FEEDBACK, 21, MIN_FEEDBACK)["decision"] == WAIT


# --- The database: schema version 3 ----------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_version_1_database_is_migrated_and_keeps_its_rows(request, dialect, tmp_path, make_app):
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    engine = create_engine(db.database_url({"DATABASE_URL": url}, str(tmp_path)))
    old = MetaData()  # the predictions table as version 1 made it
    predictions = Table("predictions", old, *(column._copy() for column in db.predictions.columns
                                              if column.name not in ("source", "shadow", "latency_ms")),
                        UniqueConstraint("request_id", "item", name="predictions_request_item"),
                        Index("predictions_created_at", "created_at"))
    Table("monitoring_schema", old, *(column._copy() for column in db.schema_version.columns))
    row = {"request_id": "before", "item": 0, "created_at": db.utcnow(), "model_name": "tiny-colours",
           "model_version": "0.0.1", "label": "red", "score": 0.9, "top": [["red", 0.9]], "feedback_count": 0}
    with engine.begin() as connection:
        old.create_all(connection)
        connection.execute(insert(predictions), [row])
        connection.execute(text("INSERT INTO monitoring_schema VALUES (1, CURRENT_TIMESTAMP)"))
    engine.dispose()

    app = make_app(DATABASE_URL=url)
    with db.get_database(app).engine.begin() as connection:
        assert connection.execute(select(db.schema_version.c.version)).scalars().all() == [1, 2, 3]
        kept = connection.execute(select(db.predictions)).one()
        assert (kept.request_id, kept.label, kept.source, kept.shadow, kept.latency_ms) == (
            "before", "red", "server", False, None)
        connection.execute(insert(db.predictions), [{**row, "model_version": "0.1.0", "shadow": True}])
    with pytest.raises(IntegrityError), db.get_database(app).engine.begin() as connection:
        connection.execute(insert(db.predictions), [row])  # a reused request id is still one
    if dialect == "sqlite":
        with db.get_database(app).engine.connect() as connection:
            indexes = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'index' "
                                              "AND sql IS NOT NULL")).scalars().all()
        assert indexes == ["predictions_created_at"]


# --- Promote and roll back -------------------------------------------------------------------


@pytest.fixture
def host(tmp_path, tiny_model_path, candidate_path):
    """A host's files: the served model and its ONNX copy, and the candidate with its own."""
    folder = tmp_path / "host"
    folder.mkdir()
    served = shutil.copyfile(tiny_model_path, folder / "model.zip")
    export_onnx(served, folder / "model.onnx")
    candidate = shutil.copyfile(candidate_path, folder / "candidate.zip")
    export_onnx(candidate, folder / "candidate.onnx")
    assert sorted(files(folder)) == sorted(["model.zip", "model.onnx", "model.onnx.json", "candidate.zip",
                                            "candidate.onnx", "candidate.onnx.json"])
    return folder, files(folder)


def files(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def command_app(folder: Path, load: bool = False):
    return create_app({"TESTING": True, "LOAD_MODEL": load, "MODEL_PATH": str(folder / "model.zip"),
                       "ONNX_MODEL_PATH": str(folder / "model.onnx"), "INFERENCE_ENGINE": "onnxruntime",
                       "CANDIDATE_MODEL_PATH": str(folder / "candidate.zip"), "TORCH_THREADS": 1,
                       "DATABASE_URL": f"sqlite:///{folder / 'monitoring' / 'db.sqlite'}"})


def test_promote_then_rollback_move_the_models_and_reload_gunicorn(host, gunicorn_stand_in):
    folder, before = host
    process, hup = gunicorn_stand_in
    promoted = command_app(folder).test_cli_runner().invoke(args=["promote", "--pid", str(process.pid)])
    assert promoted.exit_code == 0, promoted.output
    assert "promoted:" in promoted.output and "tiny-colours 0.1.0, served with onnxruntime" in promoted.output
    assert wait_for(hup)
    hup.unlink()
    after = files(folder)
    assert after == {
        "model.zip": before["candidate.zip"], "model.onnx": before["candidate.onnx"],
        "model.onnx.json": before["candidate.onnx.json"], "model.zip.previous": before["model.zip"],
        "model.onnx.previous": before["model.onnx"], "model.onnx.json.previous": before["model.onnx.json"],
    }
    # What the reloaded workers load: the candidate, on its own ONNX copy, and no candidate.
    served = command_app(folder, load=True)
    assert served.extensions["classifier"].model.version == "0.1.0"
    assert served.extensions["classifier"].engine.name == "onnxruntime"
    assert served.extensions["candidate"] is None

    rolled = command_app(folder).test_cli_runner().invoke(args=["rollback", "--pid", str(process.pid)])
    assert rolled.exit_code == 0, rolled.output
    assert "rolled back:" in rolled.output and "tiny-colours 0.0.1" in rolled.output
    assert wait_for(hup)
    assert files(folder) == before  # as it was: the promoted model is the candidate again


def test_a_candidate_that_fails_the_check_changes_nothing(host, gunicorn_stand_in, corrupt_model_path):
    folder, _ = host
    process, hup = gunicorn_stand_in
    shutil.copyfile(corrupt_model_path, folder / "candidate.zip")
    before = files(folder)
    refused = command_app(folder).test_cli_runner().invoke(args=["promote", "--pid", str(process.pid)])
    assert refused.exit_code == 1 and "refused" in refused.output and "unchanged" in refused.output
    assert ".incoming" not in refused.output
    assert files(folder) == before and not hup.exists()
    nothing = command_app(folder).test_cli_runner().invoke(args=["rollback", "--pid", str(process.pid)])
    assert nothing.exit_code == 1 and "Nothing to roll back" in nothing.output
    assert files(folder) == before and not hup.exists()
