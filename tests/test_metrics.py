"""GET /metrics: Prometheus counts that add up across gunicorn workers, and in one process."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testing.load import worker_pids
from testing.multipart import post_files
from testing.samples import image_bytes
from testing.servers import procfile_server

RED_JPEG = image_bytes("JPEG", colour=(250, 0, 0))


def parse(text: str) -> dict:
    """{(name, frozenset(labels)): value} from the Prometheus text format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def scrape_client(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.get_data(as_text=True))


def value(samples: dict, metric: str, /, **labels) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def access_lines(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]




def wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_metrics_add_up_across_two_gunicorn_workers(tiny_model_path, tmp_path):
    log = tmp_path / "gunicorn.log"
    env = {"MODEL_PATH": str(tiny_model_path)}
    with procfile_server(env=env, log_path=log) as (url, process):
        metrics_dir = process.run_dir / "prometheus"  # the front's (front/start.py)
        wait_for(lambda: log.read_text().count("loaded in") == 2, what="both workers to load")
        workers = worker_pids(process.pid)
        assert len(workers) == 2

        def predict(_):
            return post_files(f"{url}/predict", [("red.jpg", RED_JPEG)])[0]

        # Concurrent requests, until both workers have answered some (checked in the log).
        sent = 0
        with ThreadPoolExecutor(4) as pool:
            while sent < 200:
                assert set(pool.map(predict, range(20))) == {200}
                sent += 20
                answered_by = {e["pid"] for e in access_lines(log) if e["path"] == "/predict"}
                if answered_by == workers:
                    break
        assert answered_by == workers, "one worker answered every request"
        for _ in range(3):
            assert post_files(f"{url}/predict", [("a.jpg", b"not an image")])[0] == 400

        # Whichever worker answers the scrape, it reports both workers' counts. Scrapes are
        # sent four at a time, so that both workers answer some.
        scraped_by = set()
        with ThreadPoolExecutor(4) as pool:
            for rounds in range(1, 21):
                for samples in pool.map(lambda _: scrape(url), range(4)):
                    assert value(samples, "http_requests_total", method="POST", route="/predict", status="200") == sent
                    assert value(samples, "http_requests_total", method="POST", route="/predict", status="400") == 3
                    assert value(samples, "http_request_duration_seconds_count", method="POST", route="/predict") == sent + 3
                    assert value(samples, "model_inference_duration_seconds_count") == sent
                    assert value(samples, "model_inference_images_total") == sent
                    assert 1 <= value(samples, "http_requests_in_flight") <= 4  # the scrapes themselves
                    assert value(samples, "model_info", name="tiny-colours", version="0.0.1") == 1
                wait_for(lambda: sum(e["path"] == "/metrics" for e in access_lines(log)) == 4 * rounds,
                         what="the scrapes' log lines")
                scraped_by = {e["pid"] for e in access_lines(log) if e["path"] == "/metrics"}
                if scraped_by == workers:
                    break
        assert scraped_by == workers, "one worker answered every scrape"

        # A worker that dies in the middle of a request takes nothing with it: its counts
        # stay, its live gauges (in-flight, model info) go. A slow upload holds one worker when
        # sent to gunicorn's own socket (nginx in front would read it whole first).
        with socket.socket(socket.AF_UNIX) as slow:
            slow.connect(str(process.run_dir / "app.sock"))
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                         b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
            wait_for(lambda: value(scrape(url), "http_requests_in_flight") == 2, what="the slow upload to start")
            wait_for(lambda: access_lines(log)[-1]["path"] == "/metrics", what="the scrape's log line")
            busy = (workers - {access_lines(log)[-1]["pid"]}).pop()
            os.kill(busy, signal.SIGKILL)
            wait_for(lambda: len(worker_pids(process.pid) - {busy}) == 2, what="gunicorn to replace the worker")
        samples = scrape(url)
        assert value(samples, "http_requests_total", method="POST", route="/predict", status="200") == sent
        assert value(samples, "http_requests_in_flight") == 1
        assert value(samples, "model_info", name="tiny-colours", version="0.0.1") == 1
        left = {p.name for p in metrics_dir.iterdir()}
        assert f"counter_{busy}.db" in left
        assert not [name for name in left if name.startswith("gauge_live") and name.endswith(f"_{busy}.db")]


def test_metrics_in_one_process_count_requests_by_route_and_status(client):
    def predictions(status):
        return value(scrape_client(client), "http_requests_total", method="POST", route="/predict", status=status)

    before_ok, before_bad = predictions("200"), predictions("400")
    before_inferences = value(scrape_client(client), "model_inference_duration_seconds_count")
    for _ in range(3):
        client.post("/predict", data={"file": (io.BytesIO(RED_JPEG), "red.jpg")}, content_type="multipart/form-data")
    client.post("/predict", data={"file": (io.BytesIO(b"text"), "a.jpg")}, content_type="multipart/form-data")
    assert predictions("200") == before_ok + 3
    assert predictions("400") == before_bad + 1
    samples = scrape_client(client)
    assert value(samples, "model_inference_duration_seconds_count") == before_inferences + 3
    assert value(samples, "model_info", name="tiny-colours", version="0.0.1") == 1


def test_an_unknown_route_is_counted_under_one_label(client):
    before = value(scrape_client(client), "http_requests_total", method="GET", route="unmatched", status="404")
    client.get("/wp-admin")
    client.get("/random-scan-12345")
    after = value(scrape_client(client), "http_requests_total", method="GET", route="unmatched", status="404")
    assert after == before + 2
