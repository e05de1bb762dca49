"""The shipped model is ready to be monitored: GET /monitoring scores drift from the first requests.

The notebook writes the share of each class among the model's own validation predictions into
meta.json (classifier/drift.py); /monitoring compares what it predicted since with it. A stream
of images like the data set's scores below the threshold, a stream of only a few classes above.
Whatever the model's classes: the streams are made of fixture images chosen by the model's own
labels and answers, and the expected score is computed from the answers the server gave.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from app import create_app
from classifier.drift import REFERENCE_KEY, drift_score, reference_distribution
from classifier.model import load_model, read_meta
from web import db, records

from testing import ROOT
from testing.samples import SHIPPED_MODEL, dataset_jpegs, model_answer

STREAM = 64  # requests in a stream made to validation's proportions


@pytest.fixture(scope="module")
def labels() -> list[str]:
    return list(load_model(SHIPPED_MODEL).labels)


@pytest.fixture(scope="module")
def reference(labels) -> dict[str, float]:
    found = reference_distribution(read_meta(SHIPPED_MODEL), labels)
    assert found is not None, f"model.zip's meta.json has no {REFERENCE_KEY}: train it again"
    return found


@pytest.fixture(scope="module")
def answered(data_dir) -> dict[Path, str]:
    """Every fixture image and the shipped model's own answer for it."""
    return {path: model_answer(path)["label"] for path in dataset_jpegs(data_dir / "ucmerced")}


@pytest.fixture
def client(tmp_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(SHIPPED_MODEL), "TORCH_THREADS": 1,
                      "ONNX_MODEL_PATH": str(ROOT / "model.onnx"),
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'monitoring.sqlite'}"})
    yield app.test_client()
    records.writer(app).close()
    db.get_database(app).engine.dispose()


def send(client, images: list[Path]) -> tuple[dict, Counter]:
    """Classify ``images`` one request each; the drift /monitoring then reports, and the answers given."""
    given = Counter()
    for path in images:
        response = client.post("/predict", data={"file": (io.BytesIO(path.read_bytes()), path.name)})
        assert response.status_code == 200, response.get_json()
        given[response.get_json()["label"]] += 1
    return client.get("/monitoring").get_json()["drift"], given


def test_the_shipped_model_carries_its_validation_distribution(labels, reference):
    meta = read_meta(SHIPPED_MODEL)
    assert list(meta[REFERENCE_KEY]) == labels and sum(reference.values()) == pytest.approx(1.0)
    # The model's own predictions on its validation images: whole counts of them.
    images = meta["metrics"]["val_images"]
    assert all(abs(share * images - round(share * images)) < 1e-3 for share in reference.values())


def like_validation(answered: dict[Path, str], reference: dict[str, float]) -> list[Path]:
    """Fixture images the model answers as each class, as many as its share of validation (of STREAM)."""
    by_label: dict[str, list[Path]] = {}
    for path, label in answered.items():
        by_label.setdefault(label, []).append(path)
    stream = []
    for label, share in reference.items():
        found = by_label.get(label, [])
        stream += [found[i % len(found)] for i in range(round(share * STREAM))] if found else []
    return stream


def test_images_like_the_data_sets_score_below_the_threshold(client, labels, reference, answered):
    of_its_classes = [path for path in answered if path.parent.name in labels]
    of_the_fixtures_classes = {path.parent.name for path in of_its_classes} == set(labels)
    if of_the_fixtures_classes:  # the shipped model: every fixture image of its classes, as they come
        stream = of_its_classes
    else:  # a model of other classes: the images it answers as each class, in validation's proportions
        stream = like_validation(answered, reference)
    drift, given = send(client, stream)
    assert drift["score"] == pytest.approx(drift_score(given, reference), abs=1e-6)
    # Like its data set: its classes' images, or images of every class validation predicted.
    if of_the_fixtures_classes or sum(reference[label] for label in given) == pytest.approx(1.0):
        assert drift["score"] < drift["threshold"] and drift["drifting"] is False, (drift, given)


def test_a_stream_of_only_a_few_classes_is_flagged(client, labels, reference, answered):
    # The classes validation predicted least among those the model gives some fixture image.
    given_to_some = sorted(set(answered.values()), key=lambda label: (reference[label], label))
    few = given_to_some[: max(1, len(labels) // 8)]
    stream = [path for path, label in answered.items() if label in few] * 2
    drift, given = send(client, stream)
    assert set(given) == set(few)
    assert drift["score"] == pytest.approx(drift_score(given, reference), abs=1e-6)
    assert drift["score"] >= drift["threshold"] and drift["drifting"] is True, (drift, given)
