"""The real thing: the Procfile's web command (gunicorn, two workers) on a loopback port."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from testing.load import worker_pids
from testing.multipart import post_files
from testing.samples import model_answer
from testing.servers import procfile_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "gunicorn.log"
    with procfile_server(log_path=log) as (url, process):
        yield url, process, log


def test_procfile_server_classifies_a_data_set_image(server, dataset_jpeg):
    url, _, _ = server
    status, body = post_files(f"{url}/predict", [(dataset_jpeg.name, dataset_jpeg.read_bytes())])
    assert status == 200, body
    answer = json.loads(body)
    assert answer["label"] == model_answer(dataset_jpeg)["label"]  # the shipped model's own answer
    assert answer["top"][0] == {"label": answer["label"], "score": answer["score"]}


def test_procfile_server_answers_curl_and_errors_as_json(server, dataset_tiff):
    url, _, _ = server
    raw = subprocess.run(
        ["curl", "-s", "-X", "POST", "--data-binary", f"@{dataset_tiff}", "-H", "Content-Type: image/tiff", f"{url}/predict"],
        capture_output=True, check=True,
    )
    assert json.loads(raw.stdout)["label"] == model_answer(dataset_tiff)["label"]
    status, body = post_files(f"{url}/predict", [("notes.jpg", b"plain text, not an image" * 10)])
    assert status == 400 and json.loads(body)["error"]["code"] == "not_an_image"


def test_procfile_server_runs_two_workers_that_loaded_after_fork(server):
    _, process, log = server
    assert len(worker_pids(process.pid)) == 2
    # /health turns 200 as soon as one worker is ready; give the other a moment to log.
    deadline = time.monotonic() + 30
    while log.read_text().count("loaded in") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    loaded_by = set(re.findall(r"\[(\d+)\] \[INFO\] web.served_model: model .* loaded in", log.read_text()))
    assert len(loaded_by) == 2, log.read_text()  # each worker loads its own model, after fork
