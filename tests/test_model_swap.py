"""A model swap under load, through the real Procfile gunicorn and the real swap-model command.

Client threads classify images and ask /health the whole time; `flask --app app swap-model`
checks the new file, renames it over MODEL_PATH and sends gunicorn SIGHUP. Not one request
may fail, and afterwards every worker serves the new version. Then a corrupt file and a
file that breaks the contract are refused, and the new version keeps serving.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from testing import ROOT
from testing.load import Load, send, wait_for_workers, wait_until, worker_pids
from testing.multipart import form_body
from testing.samples import image_bytes
from testing.servers import procfile_server

pytestmark = pytest.mark.slow

RED = image_bytes("PNG", colour=(255, 0, 0))
BLUE = image_bytes("JPEG", colour=(0, 0, 255))


def swap_model(path, served, master_pid: int) -> subprocess.CompletedProcess:
    """The command a person or a deploy script runs, as a separate process."""
    environment = {**os.environ, "MODEL_PATH": str(served)}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "swap-model", str(path), "--pid", str(master_pid)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120,
    )


def mixed_requests(url: str):
    """Single predictions, batches and health checks, each checked for the right answer."""
    batch_body, batch_type = form_body([("upload", RED), ("upload", BLUE)])

    def request(thread: int, index: int):
        kind = ("predict", "batch", "health")[index % 3]
        if kind == "predict":
            status, body = send(url, "POST", "/predict", RED, {"Content-Type": "image/png"})
            correct = status == 200 and body["label"] == "red"
        elif kind == "batch":
            status, body = send(url, "POST", "/predict/batch", batch_body, {"Content-Type": batch_type})
            correct = status == 200 and [item["label"] for item in body["results"]] == ["red", "blue"]
        else:
            status, body = send(url, "GET", "/health")
            correct = status == 200 and body["status"] == "ok"
        if not correct:
            raise AssertionError(f"{kind}: {status} {body!r}")
        return kind, status, body

    return request


def served_versions(load: Load, since: float) -> set[str]:
    return {o.body["version"] for o in load.outcomes if o.ok and o.kind == "health" and o.started > since}


def test_swap_under_load_loses_no_request_and_refuses_bad_files(
    tmp_path, tiny_model_path, tiny_model_v2_path, corrupt_model_path, wrong_contract_model_path
):
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_path, served)
    log = tmp_path / "gunicorn.log"
    report = {}
    with procfile_server(env={"MODEL_PATH": str(served)}, log_path=log) as (url, master):
        old_workers = wait_for_workers(master.pid, 2)
        with Load(mixed_requests(url), threads=4) as load:
            wait_until(lambda: load.count() >= 60, what="traffic before the swap")
            swapped = swap_model(tiny_model_v2_path, served, master.pid)
            signalled_at = time.monotonic()
            assert swapped.returncode == 0, swapped.stderr
            new_workers = wait_for_workers(master.pid, 2, exclude=old_workers)
            reloaded_at = time.monotonic()
            wait_until(
                lambda: load.count() >= 60 + 300 and served_versions(load, reloaded_at),
                what="traffic served by the new workers",
            )
        during_reload = [o for o in load.outcomes if o.finished > signalled_at and o.started < reloaded_at]
        report["swap"] = {
            "requests": len(load.outcomes),
            "failed": len(load.failures()),
            "in_flight_while_gunicorn_replaced_its_workers": len(during_reload),
            "slowest_of_those_s": round(max((o.finished - o.started for o in during_reload), default=0), 2),
            "versions_seen_by_health": sorted({o.body["version"] for o in load.outcomes if o.ok and o.kind == "health"}),
        }
        assert during_reload, "no request overlapped the reload: the test proved nothing"
        assert load.failures() == [], load.failures()[:5]
        assert served_versions(load, reloaded_at) == {"0.0.2"}
        assert send(url, "GET", "/model")[1]["version"] == "0.0.2"
        assert served.read_bytes() == tiny_model_v2_path.read_bytes()

        # Bad files: refused before anything happens, under load again.
        with Load(mixed_requests(url), threads=2) as load:
            for bad in (corrupt_model_path, wrong_contract_model_path):
                refused = swap_model(bad, served, master.pid)
                assert refused.returncode == 1, refused.stdout
                assert "refused" in refused.stderr and "unchanged" in refused.stderr
                report.setdefault("refused", []).append(refused.stderr.strip().splitlines()[-1])
            time.sleep(1)
        assert load.failures() == []
        assert worker_pids(master.pid) == new_workers, "a refused file must not reload gunicorn"
        assert served.read_bytes() == tiny_model_v2_path.read_bytes()
        for _ in range(6):  # both workers, whichever answers
            assert send(url, "GET", "/health")[1]["version"] == "0.0.2"
        report["after_refusals"] = {"requests": len(load.outcomes), "failed": len(load.failures())}

    results = ROOT / "test-results"
    results.mkdir(exist_ok=True)
    (results / "model-swap.json").write_text(json.dumps(report, indent=2) + "\n")
    assert "Hang up" in log.read_text()  # the reload was gunicorn's own
