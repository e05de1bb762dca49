"""The model.zip the repo ships meets the model-file contract (docs/model.md#the-model-file).

Whatever classes it has: the notebook's user chooses them, so these tests read the model's
own labels and meta.json, never a class name.
"""

from __future__ import annotations

import pytest

from classifier.images import INPUT_SIZE
from classifier.model import load_model

from testing.samples import SHIPPED_MODEL, dataset_jpegs, model_answer

SHIPPED = SHIPPED_MODEL
# How far below its validation accuracy the model may score on the fixture images of its classes.
ACCURACY_SLACK = 0.1


@pytest.fixture(scope="module")
def shipped():
    return load_model(SHIPPED)


def test_labels_are_the_classes_it_was_validated_on(shipped):
    labels = list(shipped.labels)
    assert len(labels) >= 2 and len(set(labels)) == len(labels)
    assert all(label and label == label.strip() for label in labels)
    # The notebook scores every class it trained on, in the labels' order.
    assert list(shipped.meta["metrics"]["val_per_class_accuracy"]) == labels


def test_meta_carries_what_the_contract_lists(shipped):
    meta = shipped.meta
    for key in ("name", "version", "dataset", "classes", "input_size", "metrics", "created", "revision"):
        assert key in meta, f"meta.json lacks {key!r}"
    assert meta["classes"] == len(shipped.labels)
    assert meta["input_size"] == list(INPUT_SIZE)
    assert 0.0 <= float(meta["metrics"]["val_accuracy"]) <= 1.0
    assert all(0.0 <= float(value) <= 1.0 for value in meta["metrics"]["val_per_class_accuracy"].values())


def test_it_is_as_right_on_the_fixture_images_of_its_classes_as_its_validation_says(shipped, data_dir):
    """The service's pipeline, on the fixture images of the classes the model knows: all of them
    for the shipped UC Merced model (the tests elsewhere compare servers and pages with these
    answers, not with the images' classes); none for a model of other classes."""
    samples = [(path, path.parent.name) for path in dataset_jpegs(data_dir / "ucmerced")]
    samples += [(path, path.stem.rstrip("0123456789")) for path in (data_dir / "ucmerced-tif").iterdir()]
    known = [(path, name) for path, name in samples if name in shipped.labels]
    right = sum(model_answer(path)["label"] == name for path, name in known)
    expected = float(shipped.meta["metrics"]["val_accuracy"]) - ACCURACY_SLACK
    assert right >= expected * len(known), (right, len(known))


def test_file_is_small_enough_to_ship():
    assert SHIPPED.stat().st_size <= 20 * 1024 * 1024
