"""The OpenAPI document at GET /openapi.json describes the app, and Schemathesis checks it.

Schemathesis's own CLI runs against the real Procfile gunicorn: it generates requests from
the document (valid ones and, in negative mode, ones the document rules out) and fails on
any server error or any answer the document does not allow (status, content type, body
schema, headers, methods). It runs once with the API open and once with API_KEY set, where
it also checks that a request without the key is refused.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from web.errors import ERRORS, message

from testing import ROOT
from testing.load import send
from testing.samples import TINY_LABELS
from testing.servers import procfile_server

KEY = "schemathesis-key-0123456789"


def documented_operations(document: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, operations in document["paths"].items() for method in operations
            if method != "parameters"}  # a path's own parameters, such as {name}


def app_routes(app) -> set[tuple[str, str]]:
    return {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def resolved(document: dict, node: dict) -> dict:
    """``node``, or what its ``$ref`` (``#/components/...``) points to in ``document``."""
    while "$ref" in node:
        target = document
        for key in node["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        node = target
    return node


def parameter(document: dict, path: str, method: str, name: str) -> dict:
    return next(item for item in document["paths"][path][method]["parameters"] if item["name"] == name)


def test_every_route_is_documented_and_nothing_else(app, client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert documented_operations(document) == app_routes(app)
    assert {("/predict", "post"), ("/predict/batch", "post"), ("/health", "get"), ("/model", "get")} <= app_routes(app)


def test_every_prediction_error_is_documented(client):
    document = client.get("/openapi.json").get_json()
    for path in ("/predict", "/predict/batch"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "408", "413", "415", "503"} <= set(responses)


def test_every_documented_error_is_the_tables(client):
    document = client.get("/openapi.json").get_json()
    documented = 0
    for path, operations in document["paths"].items():
        # The Open Inference Protocol's routes answer errors in its own shape.
        shape = "ProtocolError" if path.startswith("/v2/") else "Error"
        for operation in (operations[method] for method in operations if method != "parameters"):
            for status, response in operation["responses"].items():
                codes = re.findall(r"^- `(\w+)`", response["description"], re.MULTILINE)
                assert all(ERRORS[code].status == int(status) for code in codes), (status, codes)
                if codes:
                    assert resolved(document, response["content"]["application/json"]["schema"]) == \
                        document["components"]["schemas"][shape]
                documented += len(codes)
    assert documented >= 20


def test_the_document_states_this_apps_limits_and_labels(tiny_model_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "MAX_BATCH_FILES": 7})
    document = app.test_client().get("/openapi.json").get_json()
    batch = document["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert resolved(document, batch["schema"])["properties"]["file"]["maxItems"] == 7
    for path in ("/predict", "/predict/batch"):
        top = parameter(document, path, "post", "top")["schema"]
        assert top["maximum"] == len(TINY_LABELS)
    assert document["components"]["schemas"]["LabelScore"]["properties"]["label"]["enum"] == TINY_LABELS
    assert resolved(document, {"$ref": "#/components/schemas/FeedbackRequest"})["properties"]["label"]["enum"] == TINY_LABELS
    assert "security" not in document["paths"]["/predict"]["post"]
    # The errors' statuses and messages are the table's, with this app's limits.
    too_large = document["paths"]["/predict/batch"]["post"]["responses"]["413"]["description"]
    assert "too_many_files" in too_large and "More than 7 files" in too_large
    for code in ("payload_too_large", "image_too_large"):
        assert message(code, app.config) in too_large


def test_with_an_api_key_the_document_says_predict_needs_it(tiny_model_path):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "API_KEY": KEY})
    document = app.test_client().get("/openapi.json").get_json()
    for path in ("/predict", "/predict/batch"):
        assert document["paths"][path]["post"]["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert "security" not in document["paths"]["/health"]["get"]


# The Open Inference Protocol's routes under /versions/{version} run the same views as those
# without it (web/inference_protocol.py's model_route): generated once, for the shorter path.
SAME_VIEWS = "/versions/"


def run_schemathesis(url: str, report_dir: Path, cwd: Path, headers: list[str] = (),
                     examples: int = 100) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
        "run", f"{url}/openapi.json",
        "--checks", "all",
        # Random bytes fit the document's `format: binary` but are not images, so a valid
        # request may rightly get 400: "valid data must be accepted" cannot hold here.
        "--exclude-checks", "positive_data_acceptance",
        "--mode", "all",
        "--max-examples", str(examples),
        "--exclude-path-regex", SAME_VIEWS,
        # One worker: two threads generating at once hit CPython 3.11.7's thread-unsafe AST
        # depth check (python/cpython#106905) inside Hypothesis, a SystemError now and then.
        "--workers", "1",
        "--no-color",
        "--report", "junit", "--report-dir", str(report_dir),
    ]
    for header in headers:
        command += ["--header", header]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("api_key", [None, KEY], ids=["open", "with-api-key"])
def test_schemathesis_finds_no_failure(tmp_path, tiny_model_path, api_key):
    env = {"MODEL_PATH": str(tiny_model_path)}
    if api_key:
        env["API_KEY"] = api_key
    report_dir = ROOT / "test-results" / f"schemathesis-{'with-api-key' if api_key else 'open'}"
    shutil.rmtree(report_dir, ignore_errors=True)  # only this run's report
    with procfile_server(env=env, log_path=tmp_path / "gunicorn.log") as (url, _):
        operations = documented_operations(send(url, "GET", "/openapi.json")[1])
        # With the key, what is new is the key's checks on every operation: fewer examples do.
        result = run_schemathesis(url, report_dir, cwd=tmp_path, headers=[f"X-API-Key: {api_key}"] if api_key else [],
                                  examples=50 if api_key else 100)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    # Every generated case passed (a warning that random bytes are mostly refused is fine).
    assert re.search(r"(\d+) generated, \1 passed", output), output[-3000:]
    # Every operation was exercised but the document's own (Schemathesis leaves it out) and
    # the protocol's second paths to the same views.
    selected = len({(path, method) for path, method in operations if SAME_VIEWS not in path}) - 1
    assert f"{selected} selected / {len(operations) - 1} total" in output, output[:2000]
    log = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in log, log[-5000:]
