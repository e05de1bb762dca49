"""Stopping the real Procfile server loses no request (docs/operations.md, "Stopping without
losing a request").

A platform stops the server in one of two ways: SIGTERM to every process of it at once (a
Heroku dyno, on every deploy, restart and daily cycle), or SIGTERM to its top process only
(`docker stop`, Kubernetes). Either arrives while four clients post images in a loop, each
request on a fresh connection, and two slow uploads (1.5 MB over 3 s, a phone on a slow
link) are under way. Lost: a request the server accepted and did not answer 200 (a reset, a
broken pipe, no answer, any other status). A connection refused is not lost: its client
knows it was not taken and can send it elsewhere, as a platform's router does.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from testing import ROOT
from testing.load import Load, send_unless_refused, slow_post, wait_for_workers, wait_until
from testing.multipart import form_body
from testing.servers import procfile_server

pytestmark = pytest.mark.slow

STOPS = {
    "every process": lambda front: os.killpg(front, signal.SIGTERM),
    "the top process": lambda front: os.kill(front, signal.SIGTERM),
}
CLIENTS = 4
SLOW_UPLOADS, SLOW_UPLOAD_BYTES, SLOW_UPLOAD_S = 2, 1_500_000, 3.0
# Heroku kills whatever is left of a dyno 30 s after its SIGTERM; so does Kubernetes, by default.
PLATFORM_GRACE_S = 30


@pytest.fixture(scope="module")
def upload(dataset_jpeg) -> tuple[bytes, dict]:
    body, content_type = form_body([("airplane.jpg", dataset_jpeg.read_bytes())])
    return body, {"Content-Type": content_type}


@pytest.fixture(scope="module")
def large_upload() -> tuple[bytes, dict]:
    """A PNG of noise: as many bytes as a phone's photo, since noise does not compress."""
    side = int((SLOW_UPLOAD_BYTES / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    body, content_type = form_body([("photo.png", png.getvalue())])
    assert len(body) >= SLOW_UPLOAD_BYTES
    return body, {"Content-Type": content_type}


def post(url: str, upload: tuple[bytes, dict]):
    kind, status, body = send_unless_refused(url, "/predict", *upload)
    if kind == "refused":
        time.sleep(0.05)  # the server is going; no need to knock hard
    return kind, status, body


def slow_upload(url: str, upload: tuple[bytes, dict]) -> str:
    """"200", another status, or the error that ended it."""
    try:
        return str(slow_post(url, "/predict", *upload, seconds=SLOW_UPLOAD_S)[0])
    except OSError as error:
        return f"{type(error).__name__}: {error}"


def wait_gone(front: subprocess.Popen) -> float:
    """Seconds until the front and every process of its group have exited; fails past the grace."""
    started = time.monotonic()
    try:
        front.wait(timeout=PLATFORM_GRACE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server still ran {PLATFORM_GRACE_S} s after SIGTERM: the platform would kill it")

    def group_gone() -> bool:
        try:
            os.killpg(front.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(group_gone, timeout=max(0.1, PLATFORM_GRACE_S - (time.monotonic() - started)),
               what="every process of the server to exit")
    return time.monotonic() - started


def records_in(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT count(*) FROM predictions").fetchone()[0]


def save_figures(name: str, figures: dict) -> None:
    """The test's figures, for docs/operations.md: test-results/stop.json."""
    path = ROOT / "test-results" / "stop.json"
    path.parent.mkdir(exist_ok=True)
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[name] = figures
    path.write_text(json.dumps(saved, indent=2) + "\n")
    print(name, figures)


@pytest.mark.parametrize("stop", list(STOPS))
def test_a_stop_answers_every_request_it_accepted_and_writes_every_record(stop, tiny_model_path, tmp_path,
                                                                         upload, large_upload):
    database = tmp_path / "records.sqlite"
    # Records wait in the workers' queues until they exit: the stop must write them.
    env = {"MODEL_PATH": str(tiny_model_path), "DATABASE_URL": f"sqlite:///{database}",
           "RECORD_FLUSH_MS": "600000"}
    log = tmp_path / "server.log"
    with procfile_server(env=env, log_path=log) as (url, server), ThreadPoolExecutor(SLOW_UPLOADS) as pool:
        load = Load(lambda _thread, _index: post(url, upload), threads=CLIENTS)
        with load:
            wait_until(lambda: sum(o.status == 200 for o in load.outcomes) >= 20, timeout=60,
                       what="the clients' first answers")
            slow = [pool.submit(slow_upload, url, large_upload) for _ in range(SLOW_UPLOADS)]
            time.sleep(SLOW_UPLOAD_S / 3)  # the uploads are a third of the way in
            stopped = time.monotonic()
            STOPS[stop](server.process.pid)
            gone_s = wait_gone(server.process)
        slow_results = [future.result(timeout=60) for future in slow]
    outcomes = load.outcomes
    taken = [o for o in outcomes if o.kind != "refused"]
    lost = [o for o in taken if o.status != 200]
    answered_after_the_signal = [o for o in taken if o.status == 200 and o.finished > stopped]
    how_lost = Counter(str(o.status) if o.status else o.error.split(":")[0] for o in lost)
    figures = {"answered": len(taken) - len(lost), "lost": len(lost), "how_lost": dict(how_lost),
               "refused": len(outcomes) - len(taken),
               "answered_after_the_signal": len(answered_after_the_signal), "slow_uploads": slow_results,
               "exit_status": server.process.returncode, "gone_after_s": round(gone_s, 1),
               "records_written": records_in(database) if database.exists() else 0}
    save_figures(f"SIGTERM to {stop}", figures)
    assert not lost, f"{len(lost)} lost, e.g. {[(o.status, o.error or o.body) for o in lost[:5]]}"
    assert slow_results == ["200"] * SLOW_UPLOADS, slow_results
    assert server.process.returncode == 0, log.read_text()[-3000:]
    # Every answer's record was written: the queues were flushed as the workers stopped.
    assert figures["records_written"] == figures["answered"] + SLOW_UPLOADS, figures
    # The stop came while requests were in flight, and the clients went on until refused.
    assert answered_after_the_signal and figures["refused"] > 0, figures


def test_a_worker_still_loading_at_the_stop_takes_its_masters_stop(tiny_model_path, tmp_path):
    """gunicorn replaces a worker that died; a dyno's stop can come while the new one loads.

    Its SIGTERM from the platform and its master's arrive before it listens for them, and the
    kernel keeps only the first sender of a pending SIGTERM: without the front's stop mark the
    worker waited for a SIGTERM already lost, until the stop's deadline killed it.
    """
    log = tmp_path / "server.log"
    with procfile_server(env={"MODEL_PATH": str(tiny_model_path)}, log_path=log) as (_url, server):
        workers = wait_for_workers(server.gunicorn_pid, 2)
        died = sorted(workers)[0]
        os.kill(died, signal.SIGKILL)
        loading = (wait_for_workers(server.gunicorn_pid, 2, exclude={died}) - workers).pop()
        STOPS["every process"](server.process.pid)  # before the new worker has loaded the app
        wait_gone(server.process)
    text = log.read_text()
    assert f"Booting worker with pid: {loading}" in text
    # It stopped as a worker does (finishing its request in hand), not killed at the deadline.
    assert f"Worker exiting (pid: {loading})" in text, text[-3000:]
    assert server.process.returncode == 0
