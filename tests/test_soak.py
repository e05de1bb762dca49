"""Endurance on the real Procfile gunicorn: memory stays flat, and a killed worker costs little.

The soak sends a few thousand mixed requests (good images, batches, bad input) with worker
recycling switched off (MAX_REQUESTS=0), so that a leak could not hide behind restarts,
and samples each worker's memory from /proc as it goes. The kill test sends `kill -9` to
one worker under load: gunicorn must start a replacement, only the request in flight on
that worker may be lost (a sync worker serves one at a time), and every request after
the replacement must succeed. Figures go to test-results/.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time

import pytest

from testing import ROOT
from testing.load import Load, memory_mb, send, wait_for_workers, wait_until, worker_pids
from testing.multipart import form_body
from testing.samples import image_bytes
from testing.servers import procfile_server

pytestmark = pytest.mark.slow

SOAK_REQUESTS = 3000
SAMPLE_EVERY = 100
# Allowed growth of a worker's median memory from the first to the last quarter of the soak.
MAX_GROWTH_MB = 15


def write_result(name: str, data: dict) -> None:
    results = ROOT / "test-results"
    results.mkdir(exist_ok=True)
    (results / name).write_text(json.dumps(data, indent=2) + "\n")


def mixed_traffic(url: str, data_dir):
    """Requests of several kinds, each with the answer it must get."""
    jpegs = [(data_dir / "ucmerced" / name / f"{name}00.jpg").read_bytes() for name in ("airplane", "beach", "river", "harbor")]
    png = image_bytes("PNG", size=(640, 480), colour=(0, 200, 0))
    batch, batch_type = form_body([("upload", data) for data in jpegs])
    kinds = [
        ("jpeg", lambda i: send(url, "POST", "/predict", jpegs[i % 4], {"Content-Type": "image/jpeg"}), 200),
        ("png", lambda i: send(url, "POST", "/predict?top=1", png, {"Content-Type": "image/png"}), 200),
        ("batch", lambda i: send(url, "POST", "/predict/batch", batch, {"Content-Type": batch_type}), 200),
        # Random bytes after a prefix no format starts with: bare random bytes are now and then
        # a plausible TGA header, which is 415 (unsupported), not 400.
        ("garbage", lambda i: send(url, "POST", "/predict", b"garbage:" + os.urandom(2040), {"Content-Type": "image/jpeg"}), 400),
        ("truncated", lambda i: send(url, "POST", "/predict", jpegs[i % 4][:3000], {"Content-Type": "image/jpeg"}), 400),
        ("health", lambda i: send(url, "GET", "/health"), 200),
    ]

    def request(thread: int, index: int):
        kind, call, expected = kinds[index % len(kinds)]
        status, body = call(index)
        if status != expected:
            raise AssertionError(f"{kind}: {status} {body!r}")
        return kind, status, body

    return request


def quarter_medians(samples: list[float]) -> tuple[float, float]:
    quarter = max(1, len(samples) // 4)
    return statistics.median(samples[:quarter]), statistics.median(samples[-quarter:])


def test_soak_worker_memory_stays_flat(tmp_path, tiny_model_path, data_dir):
    env = {"MODEL_PATH": str(tiny_model_path), "MAX_REQUESTS": "0"}
    with procfile_server(env=env, log_path=tmp_path / "gunicorn.log") as (url, master):
        workers = wait_for_workers(master.pid, 2)
        samples = {pid: [] for pid in workers}
        load = Load(mixed_traffic(url, data_dir), threads=4, total=SOAK_REQUESTS)
        done = threading.Event()

        def sample():
            next_at = 0
            while not done.is_set():
                if load.count() >= next_at:
                    for pid in workers:
                        samples[pid].append({"requests": load.count(), **memory_mb(pid)})
                    next_at += SAMPLE_EVERY
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        with load:
            sampler.start()
            load.wait()
        done.set()
        sampler.join()
        for pid in workers:
            samples[pid].append({"requests": load.count(), **memory_mb(pid)})
        assert worker_pids(master.pid) == workers, "a worker was restarted during the soak"

    assert load.count() == SOAK_REQUESTS
    assert load.failures() == [], load.failures()[:5]
    summary = {}
    for pid, points in samples.items():
        # The first tenth is warm-up (allocator pools, torch's caches filling).
        warm = [point["rss_mb"] for point in points if point["requests"] >= SOAK_REQUESTS // 10]
        first, last = quarter_medians(warm)
        summary[str(pid)] = {
            "rss_mb_first_quarter_median": first,
            "rss_mb_last_quarter_median": last,
            "rss_growth_mb": round(last - first, 1),
            "rss_mb_min": min(warm),
            "rss_mb_max": max(warm),
            "pss_mb_start": points[0]["pss_mb"],
            "pss_mb_end": points[-1]["pss_mb"],
        }
    write_result(
        "soak-memory.json",
        {"requests": SOAK_REQUESTS, "failed": len(load.failures()), "workers": summary, "samples": {str(k): v for k, v in samples.items()}},
    )
    for pid, figures in summary.items():
        assert figures["rss_growth_mb"] < MAX_GROWTH_MB, (pid, figures)


def test_kill_9_of_a_worker_loses_only_its_request_in_flight(tmp_path, tiny_model_path, data_dir):
    log = tmp_path / "gunicorn.log"
    with procfile_server(env={"MODEL_PATH": str(tiny_model_path)}, log_path=log) as (url, master):
        workers = wait_for_workers(master.pid, 2)
        victim = min(workers)
        with Load(mixed_traffic(url, data_dir), threads=4) as load:
            wait_until(lambda: load.count() >= 200, what="traffic before the kill")
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            replacement = wait_for_workers(master.pid, 2, exclude={victim}) - workers
            replaced_at = time.monotonic()
            answered_before = load.count()
            wait_until(lambda: load.count() >= answered_before + 300, what="traffic after the replacement")
        status, body = send(url, "POST", "/predict", image_bytes("PNG", colour=(255, 0, 0)), {"Content-Type": "image/png"})
        assert status == 200 and body["label"] == "red"

    failures = load.failures()
    after_replacement = [o for o in load.outcomes if o.started > replaced_at]
    write_result(
        "kill-worker.json",
        {
            "requests": len(load.outcomes),
            "failed": len(failures),
            "failures": [f"{o.error} (started {o.started - killed_at:+.2f}s from the kill)" for o in failures],
            "killed_worker": victim,
            "replacement_worker": sorted(replacement),
            "requests_after_replacement": len(after_replacement),
            "failed_after_replacement": sum(not o.ok for o in after_replacement),
        },
    )
    assert len(replacement) == 1
    # A sync worker holds one request at a time: at most that one is lost, and it was in
    # flight when the worker died (connections still queued went to the other worker).
    assert len(failures) <= 1, failures
    assert all(o.started <= killed_at for o in failures), failures
    assert after_replacement and all(o.ok for o in after_replacement)
    assert f"Worker (pid:{victim}) was sent SIGKILL" in log.read_text()
