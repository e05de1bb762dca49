"""Request ids (kept from the caller when valid, made otherwise) and JSON access-log lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from web.telemetry import REQUEST_ID_HEADER, JsonFormatter

from testing.samples import image_bytes


def access_records(caplog):
    return [record for record in caplog.records if record.name == "web.access"]


def test_an_incoming_request_id_is_returned_and_logged(client, caplog):
    caplog.set_level(logging.INFO, logger="web.access")
    response = client.get("/health", headers={REQUEST_ID_HEADER: "lb-7f3a:42"})
    assert response.headers[REQUEST_ID_HEADER] == "lb-7f3a:42"
    (record,) = access_records(caplog)
    assert record.fields["request_id"] == "lb-7f3a:42"
    assert record.fields["status"] == 200 and record.fields["route"] == "/health"


@pytest.mark.parametrize("incoming", [None, "", "x" * 129, 'bad"quote', "<script>", "spa ce", "tab\tid"])
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_new_one(client, incoming):
    headers = {} if incoming is None else {REQUEST_ID_HEADER: incoming}
    returned = client.get("/health", headers=headers).headers[REQUEST_ID_HEADER]
    assert returned != incoming
    assert len(returned) == 32 and int(returned, 16) >= 0  # uuid4, hex


def test_every_request_gets_its_own_id(client):
    ids = {client.get("/health").headers[REQUEST_ID_HEADER] for _ in range(5)}
    assert len(ids) == 5


def test_errors_carry_the_request_id_too(client, caplog):
    caplog.set_level(logging.INFO, logger="web.access")
    response = client.post("/predict", data={"file": (io.BytesIO(b"not an image"), "a.jpg")},
                           content_type="multipart/form-data", headers={REQUEST_ID_HEADER: "req-1"})
    assert response.status_code == 400 and response.headers[REQUEST_ID_HEADER] == "req-1"
    assert client.get("/nowhere").headers[REQUEST_ID_HEADER]
    fields = [record.fields for record in access_records(caplog)]
    assert [(f["status"], f["route"]) for f in fields] == [(400, "/predict"), (404, None)]


def test_the_access_line_is_one_json_object_with_the_request_fields(client, caplog):
    caplog.set_level(logging.INFO, logger="web.access")
    client.post("/predict", data={"file": (io.BytesIO(image_bytes("PNG")), "red.png")},
                content_type="multipart/form-data", headers={REQUEST_ID_HEADER: "abc", "User-Agent": "probe/1"})
    (record,) = access_records(caplog)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["logger"] == "web.access" and entry["level"] == "info"
    assert entry["request_id"] == "abc"
    assert entry["method"] == "POST" and entry["path"] == "/predict" and entry["status"] == 200
    assert entry["user_agent"] == "probe/1" and entry["response_bytes"] > 0
    assert entry["duration_ms"] > 0 and entry["time"].endswith("+00:00")


def test_cors_lets_a_browser_page_read_the_request_id(client):
    response = client.get("/health", headers={"Origin": "https://elsewhere.example"})
    assert REQUEST_ID_HEADER.lower() in response.headers["Access-Control-Expose-Headers"].lower()
