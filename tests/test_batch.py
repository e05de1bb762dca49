"""POST /predict/batch: several images in one request, answers in order, bad items in place."""

from __future__ import annotations

import io

import pytest

from app import create_app

from testing.answers import assert_error
from testing.samples import image_bytes

RED, GREEN, BLUE = (image_bytes("PNG", colour=c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)])


def post_batch(client, items, query=""):
    return client.post(
        f"/predict/batch{query}",
        data={"file": [(io.BytesIO(data), f"image{i}.png") for i, data in enumerate(items)]},
        content_type="multipart/form-data",
    )


def test_answers_in_the_order_sent(client):
    response = post_batch(client, [BLUE, RED, GREEN, RED])
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [result["label"] for result in results] == ["blue", "red", "green", "red"]
    assert all(result["score"] > 0.9 and result["top"][0]["label"] == result["label"] for result in results)


def test_a_bad_item_gets_its_own_error_and_the_rest_are_classified(client, dataset_jpeg):
    truncated = dataset_jpeg.read_bytes()[:2000]
    response = post_batch(client, [RED, b"not an image at all", b"", truncated, image_bytes("ICO", size=(16, 16)), BLUE])
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert results[0]["label"] == "red" and results[5]["label"] == "blue"
    codes = [result.get("error", {}).get("code") for result in results[1:5]]
    assert codes == ["not_an_image", "empty_file", "not_an_image", "unsupported_type"]
    assert all(len(result["error"]["message"]) > 10 for result in results[1:5])


def test_one_file_is_a_batch_of_one(client):
    response = post_batch(client, [GREEN], query="?top=1")
    assert response.get_json() == {"results": [{"label": "green", "score": pytest.approx(1.0, abs=1e-3), "top": [{"label": "green", "score": pytest.approx(1.0, abs=1e-3)}]}]}


def test_batch_and_single_answers_agree(client, dataset_jpeg):
    data = dataset_jpeg.read_bytes()
    single = client.post("/predict", data={"file": (io.BytesIO(data), "a.jpg")}, content_type="multipart/form-data").get_json()
    batched = post_batch(client, [RED, data]).get_json()["results"][1]
    assert batched["label"] == single["label"]
    assert batched["score"] == pytest.approx(single["score"], abs=1e-5)


def test_more_files_than_the_limit_is_413(tiny_model_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "MAX_BATCH_FILES": 3})
    client = app.test_client()
    assert post_batch(client, [RED] * 3).status_code == 200
    error = assert_error(post_batch(client, [RED] * 4), 413, "too_many_files")
    assert "limit is 3" in error["message"]


def test_no_files_is_400(client):
    assert_error(client.post("/predict/batch", data={"other": "x"}, content_type="multipart/form-data"), 400, "missing_file")


def test_raw_body_is_415(client):
    assert_error(client.post("/predict/batch", data=RED, content_type="image/png"), 415, "unsupported_type")


def test_bad_top_is_400_for_the_whole_batch(client):
    assert_error(post_batch(client, [RED], query="?top=9"), 400, "invalid_parameter")


def test_top_given_twice_is_400(client):
    assert_error(post_batch(client, [RED], query="?top=1&top=2"), 400, "invalid_parameter")
    assert_error(client.post("/predict?top=1&top=2", data=RED, content_type="image/png"), 400, "invalid_parameter")


def test_a_batch_of_large_images_is_classified(client):
    # Each image is resized as soon as it is decoded, so only one full-size bitmap is held.
    big = image_bytes("PNG", size=(3000, 2000), colour=(0, 0, 255))
    response = post_batch(client, [big] * 4)
    assert [result["label"] for result in response.get_json()["results"]] == ["blue"] * 4


def test_over_the_upload_limit_is_413(tiny_model_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "MAX_CONTENT_LENGTH": 4096})
    client = app.test_client()
    assert_error(post_batch(client, [image_bytes("BMP", size=(64, 64))] * 2), 413, "payload_too_large")
