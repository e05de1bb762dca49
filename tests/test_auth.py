"""The optional API key: API_KEY set → /predict* need it; other routes and CORS preflight stay open."""

from __future__ import annotations

import io

import pytest

from app import create_app

from testing.answers import assert_error
from testing.samples import image_bytes

KEY = "k3y-for-tests-0123456789"
RED = image_bytes("PNG", colour=(255, 0, 0))


@pytest.fixture
def keyed_client(tiny_model_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "API_KEY": KEY})
    return app.test_client()


def predict(client, headers=None, path="/predict"):
    return client.post(path, data={"file": (io.BytesIO(RED), "red.png")}, content_type="multipart/form-data", headers=headers or {})


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"}, {"X-API-Key": KEY},
     {"Authorization": f"Bearer {KEY}", "X-API-Key": KEY}],
)
@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_the_key_in_either_header_is_accepted(keyed_client, headers, path):
    response = predict(keyed_client, headers, path)
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": ""},
        {"Authorization": "Bearer wrong-key-0123456789", "X-API-Key": KEY},
        {"Authorization": f"Bearer {KEY}", "X-API-Key": "wrong-key-0123456789"},
        {"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": KEY},
    ],
)
@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_without_the_right_key_it_is_401(keyed_client, headers, path):
    response = predict(keyed_client, headers, path)
    error = assert_error(response, 401, "unauthorized")
    assert "X-API-Key" in error["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/health", "/model", "/openapi.json"])
def test_other_routes_stay_open(keyed_client, path):
    assert keyed_client.get(path).status_code == 200


def test_without_api_key_predict_is_open(client):
    assert predict(client).status_code == 200


def test_cors_preflight_works_and_allows_the_key_headers(keyed_client):
    preflight = keyed_client.options(
        "/predict",
        headers={
            "Origin": "http://elsewhere.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-api-key",
        },
    )
    assert preflight.status_code == 200
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "x-api-key" in allowed
    refused = predict(keyed_client, {"Origin": "http://elsewhere.test"})
    assert refused.status_code == 401
    # CORS headers on the 401 too, so that the page can read the error.
    assert refused.headers["Access-Control-Allow-Origin"] in ("*", "http://elsewhere.test")


@pytest.mark.parametrize("key", ["short", "has a space in the key 123", "non-ascii-kéy-0123456789"])
def test_a_weak_or_unsendable_key_stops_start_up(tiny_model_path, key):
    with pytest.raises(ValueError, match="API_KEY"):
        create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "API_KEY": key})


def test_the_key_is_compared_in_constant_time(keyed_client, monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    predict(keyed_client, {"X-API-Key": "wrong-key-0123456789"})
    assert calls == [(b"wrong-key-0123456789", KEY.encode())]
