"""The HTTP API through Flask's test client: answers, every error case, CORS."""

from __future__ import annotations

import io

import pytest

from app import create_app
from classifier.errors import ModelContractError

from testing.answers import assert_error
from testing.samples import TINY_LABELS, image_bytes, png_header_only

RED_PNG = image_bytes("PNG", colour=(255, 0, 0))


def post_file(client, data: bytes, filename="photo.png", query="", field="file"):
    return client.post(
        f"/predict{query}",
        data={field: (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def assert_still_serving(client):
    response = post_file(client, RED_PNG)
    assert response.status_code == 200 and response.get_json()["label"] == "red"


def test_predict_multipart(client):
    response = post_file(client, RED_PNG)
    assert response.status_code == 200
    body = response.get_json()
    assert body["label"] == "red"
    assert 0.9 < body["score"] <= 1.0
    assert [entry["label"] for entry in body["top"]][0] == "red"
    assert len(body["top"]) == len(TINY_LABELS)


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream"])
def test_predict_raw_body(client, content_type):
    response = client.post("/predict", data=image_bytes("PNG", colour=(0, 0, 255)), content_type=content_type)
    assert response.status_code == 200
    assert response.get_json()["label"] == "blue"


@pytest.mark.parametrize(
    "fmt, save",
    [("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("HEIF", {"quality": 90})],
)
def test_predict_each_image_kind(client, fmt, save):
    response = post_file(client, image_bytes(fmt, colour=(0, 255, 0), **save), filename=f"x.{fmt.lower()}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["label"] == "green"


def test_predict_the_data_sets_tiff(client, dataset_tiff):
    response = post_file(client, dataset_tiff.read_bytes(), filename=dataset_tiff.name)
    assert response.status_code == 200
    assert response.get_json()["label"] in TINY_LABELS


@pytest.mark.parametrize("top, expected", [("1", 1), ("2", 2), ("3", 3)])
def test_top_query_parameter(client, top, expected):
    response = post_file(client, RED_PNG, query=f"?top={top}")
    assert len(response.get_json()["top"]) == expected


@pytest.mark.parametrize("top", ["0", "4", "many"])
def test_bad_top_is_400(client, top):
    assert_error(post_file(client, RED_PNG, query=f"?top={top}"), 400, "invalid_parameter")
    assert_still_serving(client)


def test_no_body_is_400(client):
    assert_error(client.post("/predict"), 400, "missing_file")
    assert_still_serving(client)


def test_form_without_file_field_is_400(client):
    assert_error(post_file(client, RED_PNG, field="image"), 400, "missing_file")
    assert_still_serving(client)


def test_empty_file_is_400(client):
    assert_error(post_file(client, b""), 400, "empty_file")
    assert_still_serving(client)


def test_empty_raw_body_is_400(client):
    assert_error(client.post("/predict", data=b"", content_type="image/jpeg"), 400, "empty_file")


def test_text_file_named_jpg_is_400(client):
    assert_error(post_file(client, b"just some text\n" * 20, filename="cat.jpg"), 400, "not_an_image")
    assert_still_serving(client)


def test_truncated_jpeg_is_400(client, dataset_jpeg):
    data = dataset_jpeg.read_bytes()
    assert_error(post_file(client, data[: len(data) // 2], filename="cut.jpg"), 400, "not_an_image")
    assert_still_serving(client)


@pytest.mark.parametrize("raw", [False, True])
def test_body_over_the_upload_limit_is_413(tiny_model_path, raw):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "MAX_CONTENT_LENGTH": 2048})
    client = app.test_client()
    big = image_bytes("BMP", size=(64, 64))  # 12 kB uncompressed
    response = client.post("/predict", data=big, content_type="image/bmp") if raw else post_file(client, big)
    error = assert_error(response, 413, "payload_too_large")
    assert "2 KB" in error["message"]
    assert_still_serving(client)


def test_image_over_the_pixel_limit_is_413(tiny_model_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "MAX_IMAGE_PIXELS": 1000})
    client = app.test_client()
    assert_error(post_file(client, image_bytes("PNG", size=(64, 48))), 413, "image_too_large")
    ok = post_file(client, image_bytes("PNG", size=(20, 20), colour=(255, 0, 0)))
    assert ok.status_code == 200 and ok.get_json()["label"] == "red"


def test_decompression_bomb_is_413(client):
    assert_error(post_file(client, png_header_only(100_000, 100_000)), 413, "image_too_large")
    assert_still_serving(client)


def test_unsupported_image_format_is_415(client):
    assert_error(post_file(client, image_bytes("ICO", size=(32, 32)), filename="x.ico"), 415, "unsupported_type")
    assert_still_serving(client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_unsupported_request_type_is_415(client, content_type):
    assert_error(client.post("/predict", data=b'{"a": 1}', content_type=content_type), 415, "unsupported_type")


def test_unknown_route_is_json_404(client):
    assert_error(client.get("/nope"), 404, "not_found")


def test_wrong_method_is_json_405(client):
    response = client.get("/predict")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_health_reports_the_model(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body.pop("engine_reason")  # here: why the shipped model.onnx is not the tiny model's copy
    assert body == {"status": "ok", "model": "tiny-colours", "version": "0.0.1", "engine": "torchscript"}


def test_health_is_503_before_the_model_is_loaded(tiny_model_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "LOAD_MODEL": False})
    client = app.test_client()
    assert client.get("/health").status_code == 503
    assert_error(post_file(client, RED_PNG), 503, "model_not_ready")


def test_model_route_gives_metadata_and_labels(client):
    body = client.get("/model").get_json()
    assert body["labels"] == TINY_LABELS
    assert body["name"] == "tiny-colours" and body["version"] == "0.0.1"
    assert body["dataset"] == "synthetic" and body["input_size"] == [224, 224]


def test_cors_allows_any_origin_by_default(client):
    response = post_file(client, RED_PNG)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    preflight = client.options(
        "/predict",
        headers={"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


def test_cors_origins_are_configurable(tiny_model_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "CORS_ORIGINS": "http://good.test"})
    client = app.test_client()
    good = client.get("/health", headers={"Origin": "http://good.test"})
    bad = client.get("/health", headers={"Origin": "http://bad.test"})
    assert good.headers["Access-Control-Allow-Origin"] == "http://good.test"
    assert "Access-Control-Allow-Origin" not in bad.headers


def test_cors_origins_are_read_as_the_front_reads_them(tiny_model_path):
    # A list with spaces and a trailing slash, as people write it: nginx (front/config.py)
    # and the app must allow the same origins from the same setting.
    from web.settings import read_settings

    setting = "http://good.test/ , http://other.test"
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "CORS_ORIGINS": setting})
    allowed = app.test_client().get("/health", headers={"Origin": "http://good.test"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://good.test"
    front = read_settings({"CORS_ORIGINS": setting})["CORS_ORIGINS"]
    assert front == ("http://good.test", "http://other.test")


def test_bad_model_file_stops_start_up(tmp_path):
    broken = tmp_path / "model.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelContractError):
        create_app({"TESTING": True, "MODEL_PATH": str(broken)})


def test_bad_setting_stops_start_up(tiny_model_path):
    with pytest.raises(ValueError, match="TORCH_THREADS"):
        create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 0})
