"""The Classifier steps, without Flask."""

from __future__ import annotations

import pytest

from classifier.errors import InvalidParameter, NotAnImage
from classifier.pipeline import Classifier, Prediction

from testing.samples import TINY_LABELS, image_bytes


@pytest.fixture(scope="module")
def classifier(tiny_model_path):
    return Classifier.setup(tiny_model_path, threads=1)


@pytest.mark.parametrize("colour, label", [((255, 0, 0), "red"), ((0, 200, 0), "green"), ((0, 0, 255), "blue")])
def test_classify_gives_the_expected_label(classifier, colour, label):
    prediction = classifier.classify(image_bytes("PNG", colour=colour), top_k=3)
    body = prediction.to_json()
    assert body["label"] == label
    assert body["score"] == body["top"][0]["score"] > 0.9
    assert [entry["label"] for entry in body["top"]][0] == label
    assert sorted(entry["label"] for entry in body["top"]) == sorted(TINY_LABELS)
    scores = [entry["score"] for entry in body["top"]]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)


def test_default_top_k_fits_a_model_with_few_classes(classifier):
    assert len(classifier.classify(image_bytes()).top) == len(TINY_LABELS)


def test_top_k_limits_the_list(classifier):
    assert len(classifier.classify(image_bytes(), top_k=1).top) == 1


@pytest.mark.parametrize("raw, expected", [(None, 3), ("", 3), ("1", 1), ("3", 3)])
def test_parse_top_k_accepts_one_to_the_class_count(classifier, raw, expected):
    assert classifier.parse_top_k(raw) == expected


@pytest.mark.parametrize("raw", ["0", "4", "-1", "two", "1.5"])
def test_parse_top_k_refuses_the_rest(classifier, raw):
    with pytest.raises(InvalidParameter, match="from 1 to 3"):
        classifier.parse_top_k(raw)


def test_classify_many_keeps_order_and_reports_bad_items_in_place(classifier):
    items = [image_bytes(colour=(0, 0, 255)), b"not an image", image_bytes(colour=(255, 0, 0))]
    results = classifier.classify_many(items, top_k=1)
    assert isinstance(results[0], Prediction) and results[0].top[0][0] == "blue"
    assert isinstance(results[1], NotAnImage)
    assert isinstance(results[2], Prediction) and results[2].top[0][0] == "red"


def test_batch_and_single_predictions_agree(classifier, dataset_jpeg):
    data = dataset_jpeg.read_bytes()
    single = classifier.classify(data, top_k=3).top
    batched = classifier.classify_many([image_bytes(), data], top_k=3)[1].top
    assert [label for label, _ in single] == [label for label, _ in batched]
    for (_, a), (_, b) in zip(single, batched):
        assert a == pytest.approx(b, abs=1e-5)


def test_a_decoder_failure_of_its_own_is_the_items_error_and_the_batch_goes_on(classifier, monkeypatch):
    # Pillow's plugins can fail with errors no list foresees: one such file is not_an_image,
    # in the API's batch and in the batch command alike (both go through prepare_item).
    from classifier import batch, pipeline

    real_decode = pipeline.decode_image

    def decode(data, max_pixels):
        if data == b"odd":
            raise RuntimeError("plugin bug")
        return real_decode(data, max_pixels=max_pixels)

    monkeypatch.setattr(pipeline, "decode_image", decode)
    results = classifier.classify_many([b"odd", image_bytes(colour=(255, 0, 0))], top_k=1)
    assert isinstance(results[0], NotAnImage) and "plugin bug" in results[0].message
    assert results[1].top[0][0] == "red"
    loaded = [("odd.png", pipeline.prepare_item(b"odd")), ("red.png", pipeline.prepare_item(image_bytes(colour=(255, 0, 0))))]
    rows = batch.classify_loaded(classifier, loaded, top_k=1)
    assert (rows[0].error_code, rows[0].ok) == ("not_an_image", False)
    assert rows[1].prediction == results[1]


def test_an_unreadable_file_is_an_input_error_of_its_own(tmp_path):
    from classifier.batch import load_file
    from classifier.errors import UnreadableFile

    missing = load_file(tmp_path / "gone.jpg", max_pixels=10_000)
    assert isinstance(missing, UnreadableFile) and missing.code == "unreadable"
