"""A candidate on the real Procfile server (two workers): shadow and canary, each figure of
/monitoring against the test's own count, and a promotion and its rollback under load.

The figures are compared once the server has recorded what the test sent: each worker writes
its records within a flush interval, and a shadow's after its answer is sent.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from classifier.verdict import MIN_FEEDBACK, PROMOTE
from training.onnx_variants import export_onnx

from testing import ROOT
from testing.load import Load, send, wait_for_workers, wait_until
from testing.samples import image_bytes, model_answer
from testing.servers import procfile_server

from .test_rollout import BLUE, GREY, RED, Seen, candidate_path, check_report, expected_figures  # noqa: F401

pytestmark = pytest.mark.slow


def predict(url: str, colour, headers: dict | None = None) -> tuple[str, str, dict]:
    """POST /predict on a new connection: (X-Model-Version, X-Request-ID, body)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", "/predict", body=image_bytes(colour=colour),
                           headers={"Content-Type": "image/png", **(headers or {})})
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return response.getheader("X-Model-Version"), response.getheader("X-Request-ID"), body
    finally:
        connection.close()


ROLES = {"tiny-colours/0.0.1": "served", "tiny-colours/0.1.0": "candidate"}


def feedback(url: str, request_id: str, truth: str) -> None:
    body = json.dumps({"request_id": request_id, "label": truth}).encode()
    status, body = send(url, "POST", "/feedback", body, {"Content-Type": "application/json"})
    assert status == 200, body


def settled_report(url: str, seen: list[Seen], mode: str) -> dict:
    """/monitoring's candidate once it counts everything the test sent (both workers' records)."""
    expected = expected_figures(seen, mode)
    found = {}

    def counted() -> bool:
        found.update(send(url, "GET", "/monitoring")[1]["candidate"])
        models = found["models"]
        return found["compared"] == expected["compared"] and all(
            models[role]["predictions"]["total"] == figures["predictions"]["total"]
            and models[role]["feedback"]["total"] == figures["feedback"]["total"]
            for role, figures in expected["models"].items())

    wait_until(counted, timeout=30, what=f"/monitoring counting every {mode} answer and feedback")
    return found


def test_shadow_on_the_procfile_server(tmp_path, tiny_model_path, candidate_path):
    env = {"MODEL_PATH": str(tiny_model_path), "CANDIDATE_MODEL_PATH": str(candidate_path),
           "CANDIDATE_SHARE": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'monitoring.sqlite'}"}
    plan = [(BLUE, "teal")] * MIN_FEEDBACK + [(RED, "red")] * 4 + [(GREY, "green")] * 3 + [(RED, None)] * 2
    seen = []
    with procfile_server(env=env, log_path=tmp_path / "server.log") as (url, _):
        for colour, truth in plan:
            version, request_id, body = predict(url, colour)
            assert ROLES[version] == "served"
            assert body == model_answer(image_bytes(colour=colour), tiny_model_path)
            shadow = model_answer(image_bytes(colour=colour), candidate_path)
            shadow = (shadow["label"], shadow["score"])
            seen.append(Seen("served", body["label"], body["score"], shadow, truth))
            if truth:  # at once: the shadow's record may not be written yet, and it is still scored
                feedback(url, request_id, truth)
        candidate = settled_report(url, seen, "shadow")
        check_report(candidate, seen, "shadow", 1.0)
        assert candidate["verdict"]["decision"] == PROMOTE
        metrics = send(url, "GET", "/metrics")[1].decode()
        compared = 'monitoring_candidate_compared{model="tiny-colours",version="0.1.0"}'
        assert f"{compared} {float(len(plan))}" in metrics


def test_canary_on_the_procfile_server(tmp_path, tiny_model_path, candidate_path):
    env = {"MODEL_PATH": str(tiny_model_path), "CANDIDATE_MODEL_PATH": str(candidate_path),
           "CANDIDATE_MODE": "canary", "CANDIDATE_SHARE": "0.5",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'monitoring.sqlite'}"}
    seen, by_client = [], {}
    with procfile_server(env=env, log_path=tmp_path / "server.log") as (url, _):
        for index in range(48):
            # Half the requests from 8 clients that name themselves, each on a new connection.
            client = {"X-Client-ID": f"client-{index % 8}"} if index % 2 else {}
            colour, truth = (BLUE, "teal") if index % 4 else (GREY, None)
            version, request_id, body = predict(url, colour, client)
            role = ROLES[version]
            if client:
                by_client.setdefault(client["X-Client-ID"], set()).add(role)
            model = candidate_path if role == "candidate" else tiny_model_path
            assert body == model_answer(image_bytes(colour=colour), model)
            seen.append(Seen(role, body["label"], body["score"], truth=truth))
            if truth:
                feedback(url, request_id, truth)
        assert all(len(roles) == 1 for roles in by_client.values()), by_client  # whichever worker answered
        assert {s.model for s in seen} == {"served", "candidate"}  # 2 in 2**48 runs fail here
        check_report(settled_report(url, seen, "canary"), seen, "canary", 0.5)


def run_command(name: str, env: dict, master_pid: int) -> subprocess.CompletedProcess:
    """The command a person or a deploy script runs, as a separate process."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", name, "--pid", str(master_pid)],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def answers_since(load: Load, moment: float) -> list[str]:
    """Which model answered each request sent after ``moment``."""
    return [outcome.kind for outcome in list(load.outcomes) if outcome.started > moment]


def test_promote_and_rollback_under_load_lose_no_request(tmp_path, tiny_model_path, candidate_path):
    served = shutil.copyfile(tiny_model_path, tmp_path / "model.zip")
    export_onnx(served, tmp_path / "model.onnx")
    candidate = shutil.copyfile(candidate_path, tmp_path / "candidate.zip")
    export_onnx(candidate, tmp_path / "candidate.onnx")
    env = {"MODEL_PATH": str(served), "ONNX_MODEL_PATH": str(tmp_path / "model.onnx"),
           "INFERENCE_ENGINE": "onnxruntime", "CANDIDATE_MODEL_PATH": str(candidate),
           "CANDIDATE_MODE": "canary", "CANDIDATE_SHARE": "0.5",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'monitoring.sqlite'}"}

    def request(_thread: int, _index: int):
        version, _, body = predict(url, BLUE)
        if body["label"] != {"served": "blue", "candidate": "teal"}[ROLES[version]]:
            raise AssertionError(f"{version} answered {body}")
        return ROLES[version], 200, body

    with procfile_server(env=env, log_path=tmp_path / "server.log") as (url, master):
        workers = wait_for_workers(master.pid, 2)
        with Load(request, threads=3) as load:
            both = {"served", "candidate"}
            wait_until(lambda: set(answers_since(load, 0)) == both, what="both models answering")
            promoted = run_command("promote", env, master.pid)
            assert promoted.returncode == 0, promoted.stderr
            workers = wait_for_workers(master.pid, 2, exclude=workers)
            reloaded = time.monotonic()
            wait_until(lambda: len(answers_since(load, reloaded)) >= 30, what="traffic after the promotion")
            after_promotion = answers_since(load, reloaded)
            health = send(url, "GET", "/health")[1]
            report = send(url, "GET", "/monitoring")[1]

            rolled = run_command("rollback", env, master.pid)
            assert rolled.returncode == 0, rolled.stderr
            wait_for_workers(master.pid, 2, exclude=workers)
            reloaded = time.monotonic()
            wait_until(lambda: set(answers_since(load, reloaded)) == {"served", "candidate"},
                       what="both models answering after the rollback")
        assert load.failures() == [], load.failures()[:3]
    assert "promoted:" in promoted.stdout and "rolled back:" in rolled.stdout
    # After the promotion only the candidate answers, as the served model, on its own ONNX copy.
    assert set(after_promotion) == {"candidate"}
    assert (health["version"], health["engine"]) == ("0.1.0", "onnxruntime")
    assert report["model"]["version"] == "0.1.0" and report["candidate"] is None
    assert candidate.read_bytes() == candidate_path.read_bytes()
    assert served.read_bytes() == tiny_model_path.read_bytes()
