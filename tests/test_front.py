"""The front against the real Procfile server: nginx and gunicorn as they ship (docs/front.md).

Slow clients and floods come from their own loopback addresses (all of 127.0.0.0/8 is
loopback), as phones and abusers do from theirs. 127.0.0.1 plays the platform's router: the
server trusts the last element of X-Forwarded-For from it (TRUSTED_PROXIES) and from no one
else. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from web.settings import read_settings

from testing import ROOT
from testing.load import memory_mb, raw_exchange
from testing.multipart import form_body
from testing.samples import dataset_jpegs
from testing.servers import child_pids, procfile_server

pytestmark = pytest.mark.slow

ROUTER = "127.0.0.1"
SHIPPED = read_settings({"PORT": "8000"})  # the front's defaults, as the server runs here
RATE_LIMIT_BURST, CONNECTION_LIMIT = SHIPPED["RATE_LIMIT_BURST"], SHIPPED["CONNECTION_LIMIT"]
OVER_THE_LIMIT = (SHIPPED["MAX_UPLOAD_MB"] + 1) * 2**20
WASM = "/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The shipped server and model, with its per-client limits as shipped."""
    log = tmp_path_factory.mktemp("front") / "server.log"
    with procfile_server(env={"TRUSTED_PROXIES": ROUTER}, log_path=log, client_limits=True) as (url, front):
        yield url, front, log


@pytest.fixture(scope="module")
def images(data_dir) -> list[bytes]:
    return [path.read_bytes() for path in dataset_jpegs(data_dir / "ucmerced", per_class=1)[:8]]


def request(url: str, method: str, path: str, source: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 30):
    """One request from ``source``, on its own connection: (status, headers, body bytes)."""
    port = int(url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def predict(url: str, source: str, image: bytes, headers: dict | None = None):
    body, content_type = form_body([("upload", image)])
    return request(url, "POST", "/predict", source, body, {"Content-Type": content_type, **(headers or {})})


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


# ---------------------------------------------------------------------------------------
# Slow clients cost the service nothing

def normal_latencies(url: str, images: list[bytes], count: int) -> list[float]:
    """A normal client posting data-set images one after another; every answer must be 200.

    Its requests come in turn from 8 addresses, each well under the per-client rate limit,
    as the traffic of a few honest users would.
    """
    latencies = []
    for index in range(count):
        started = time.monotonic()
        status, _, body = predict(url, f"127.2.0.{index % 8 + 1}", images[index % len(images)])
        latencies.append(time.monotonic() - started)
        assert status == 200, body[:300]
        assert json.loads(body)["label"]
    return latencies


def nginx_memory_mb(front) -> float:
    """Resident memory of nginx's master and workers together."""
    return sum(memory_mb(pid)["rss_mb"] for pid in [front.nginx_pid, *child_pids(front.nginx_pid)])


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class SlowClients:
    """testing/slow_clients.py in its own process: its events, read with a deadline."""

    def __init__(self, url: str, uploaders: int, downloaders: int, seconds: float):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "testing.slow_clients", url, "--uploaders", str(uploaders),
             "--downloaders", str(downloaders), "--seconds", str(seconds),
             "--download-path", "/model.onnx", "--download-path", WASM],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def event(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, f"no word from the slow clients within {timeout:.0f}s"
        return json.loads(self.process.stdout.readline())

    def stop(self) -> dict:
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        return self.event(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.process.stdout.close()


SLOW_UPLOADERS = SLOW_DOWNLOADERS = 200
ROUNDS = 3  # alone, then among the slow clients, in turn: the machine's own ups and downs hit both
REQUESTS_PER_PHASE = 70
SLOW_SECONDS = 60  # the most a swarm runs: the test stops each once its normal requests are done


def test_slow_uploaders_and_downloaders_do_not_slow_a_normal_client(server, images):
    url = server[0]
    normal_latencies(url, images, 20)  # warm up: the first answers of a worker are slower
    alone, among_slow, nginx_mb = [], [], 0.0
    for _ in range(ROUNDS):
        alone += normal_latencies(url, images, REQUESTS_PER_PHASE)
        slow = SlowClients(url, SLOW_UPLOADERS, SLOW_DOWNLOADERS, SLOW_SECONDS)
        try:
            under_way = slow.event(timeout=60)
            assert under_way["complete"], under_way
            among_slow += normal_latencies(url, images, REQUESTS_PER_PHASE)
            nginx_mb = max(nginx_mb, nginx_memory_mb(server[1]))
            # Were they all still at it, after all the normal client's requests? None served or cut?
            done = slow.stop()
        finally:
            slow.close()
        assert done["problems"] == [], done
        assert done["still_going"] == {"uploaders": SLOW_UPLOADERS, "downloaders": SLOW_DOWNLOADERS}, done

    figures = {"p99_alone_ms": round(p99(alone) * 1000, 1), "p99_among_slow_ms": round(p99(among_slow) * 1000, 1),
               "p50_alone_ms": round(sorted(alone)[len(alone) // 2] * 1000, 1),
               "p50_among_slow_ms": round(sorted(among_slow)[len(among_slow) // 2] * 1000, 1),
               "slow_uploaders": SLOW_UPLOADERS, "slow_downloaders": SLOW_DOWNLOADERS,
               "normal_requests_each": len(alone), "nginx_rss_mb_among_slow": round(nginx_mb, 1)}
    save_figures("slow_clients", figures)
    assert p99(among_slow) <= 2 * p99(alone), figures


def save_figures(name: str, figures: dict) -> None:
    """The test's figures, for docs/front.md: test-results/front.json."""
    path = ROOT / "test-results" / "front.json"
    path.parent.mkdir(exist_ok=True)
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[name] = figures
    path.write_text(json.dumps(saved, indent=2) + "\n")
    print(name, figures)


# ---------------------------------------------------------------------------------------
# Per-client limits

def flood(url: str, source: str, image: bytes, count: int, threads: int = 6, headers=None) -> list[tuple]:
    """``count`` predictions from one address as fast as ``threads`` connections go."""
    answers, lock = [], threading.Lock()
    indexes = iter(range(count))

    def run():
        while True:
            with lock:
                if next(indexes, None) is None:
                    return
            answer = predict(url, source, image, headers)
            with lock:
                answers.append(answer)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    return answers


def assert_rate_limited(answer) -> None:
    status, headers, body = answer
    assert status == 429, body[:300]
    assert headers["content-type"] == "application/json"
    assert error_code(body) == "rate_limited"
    assert int(headers["retry-after"]) >= 1
    assert headers["access-control-allow-origin"] == "*"  # the page on another origin can read it


def test_a_flood_from_one_client_gets_429s_while_another_client_is_served(server, images):
    url = server[0]
    answers = []
    flooding = threading.Thread(target=lambda: answers.extend(flood(url, "127.3.0.1", images[0], 150)), daemon=True)
    flooding.start()
    time.sleep(0.2)
    # Another client, at a person's pace, meanwhile.
    others = []
    for index in range(10):
        others.append(predict(url, "127.3.0.2", images[index % len(images)]))
        time.sleep(0.2)
    flooding.join(timeout=120)
    assert not flooding.is_alive()
    save_figures("flood", {"flood_requests": len(answers), "served": [a[0] for a in answers].count(200),
                           "refused_429": [a[0] for a in answers].count(429),
                           "other_client_served": [a[0] for a in others].count(200)})

    assert [status for status, _, _ in others] == [200] * 10
    statuses = [status for status, _, _ in answers]
    assert len(statuses) == 150 and set(statuses) == {200, 429}, sorted(set(statuses))
    # The burst was served, then the rate: far fewer than the flood asked for.
    assert RATE_LIMIT_BURST <= statuses.count(200) < 150 // 2
    for answer in answers:
        if answer[0] == 429:
            assert_rate_limited(answer)


def cheap_predictions(url: str, source: str, forwarded_for, count: int) -> list[int]:
    """Prediction requests without an image (400 at once): they count against the limit all the same."""
    return [request(url, "POST", "/predict", source, b"", {"X-Forwarded-For": forwarded_for(i)})[0] for i in range(count)]


@pytest.mark.parametrize("path, body, source", [
    ("/feedback", {"request_id": "no-such-request", "label": "no-such-class"}, "127.3.0.4"),
    ("/device-predictions", {"predictions": []}, "127.3.0.5"),
    ("/v2/models/any/versions/1/infer", {"inputs": []}, "127.3.0.6"),
])
def test_feedback_shares_the_prediction_routes_limit(server, images, path, body, source):
    """POST /feedback and /device-predictions write to the database, and the Open Inference
    Protocol's infer is a prediction: a flood of any is refused like one of predictions."""
    url, body, json_type = server[0], json.dumps(body).encode(), {"Content-Type": "application/json"}
    statuses = [request(url, "POST", path, source, body, json_type)[0] for _ in range(60)]
    # A body the app refuses: 400 from the app at once while within the limit, then 429 from the front.
    assert set(statuses) == {400, 429} and statuses.count(429) >= 60 - 2 * RATE_LIMIT_BURST, statuses
    assert_rate_limited(request(url, "POST", path, source, body, json_type))
    assert_rate_limited(predict(url, source, images[0]))  # one budget for both
    assert request(url, "GET", "/health", source)[0] == 200  # the rest of the site is not limited


def test_the_router_hop_of_x_forwarded_for_is_the_client_and_a_client_cannot_forge_it(server, images):
    url = server[0]
    # Through the router, every request names another "client" in its own X-Forwarded-For;
    # the router appends the real one, last. The limit counts them all as that one client.
    forged = cheap_predictions(url, ROUTER, lambda i: f"10.8.{i}.1, 10.9.0.7", 60)
    assert set(forged) == {400, 429} and forged.count(429) >= 60 - 2 * RATE_LIMIT_BURST, forged
    assert_rate_limited(predict(url, ROUTER, images[0], {"X-Forwarded-For": "10.9.0.7"}))
    # Another client behind the same router is served.
    assert predict(url, ROUTER, images[1], {"X-Forwarded-For": "10.9.0.8"})[0] == 200
    # Straight from an address that is not the router, X-Forwarded-For is not believed at all.
    direct = cheap_predictions(url, "127.3.0.3", lambda i: f"10.7.{i}.1", 60)
    assert set(direct) == {400, 429} and direct.count(429) >= 60 - 2 * RATE_LIMIT_BURST, direct


def test_a_client_holding_too_many_uploads_at_once_gets_429_and_later_is_served(server, images):
    url = server[0]
    port = int(url.rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(CONNECTION_LIMIT):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.3.0.4", 0))
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n\xff")
            held.append(sock)
        deadline = time.monotonic() + 10
        answer = predict(url, "127.3.0.4", images[0])
        while answer[0] == 200 and time.monotonic() < deadline:  # until nginx has read all their headers
            time.sleep(0.1)
            answer = predict(url, "127.3.0.4", images[0])
        assert_rate_limited(answer)
        assert predict(url, "127.3.0.5", images[0])[0] == 200  # another address is not affected
    finally:
        for sock in held:
            sock.close()
    # Once nginx has seen them go, the same address is served again.
    deadline = time.monotonic() + 10
    status = predict(url, "127.3.0.4", images[0])[0]
    while status == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
        status = predict(url, "127.3.0.4", images[0])[0]
    assert status == 200


# ---------------------------------------------------------------------------------------
# nginx's own errors are the API's JSON

def json_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), error_code(body)


@pytest.mark.parametrize("data, expected", [
    (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
     b"Content-Length: %d\r\n\r\n\xff\xd8" % OVER_THE_LIMIT,
     (413, "payload_too_large")),
    (b"GET /static/no-such-file.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", (404, "not_found")),
    (b"POST /static/app.css HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", (405, "method_not_allowed")),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", (400, "request_header_too_large")),
    (b"NOT HTTP AT ALL\r\n\r\n", (400, "bad_request")),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", (414, "uri_too_long")),
], ids=["413-oversize-body", "404-static", "405-static", "400-huge-header", "400-garbage", "414-long-url"])
def test_errors_nginx_answers_itself_are_the_api_json(server, data, expected):
    assert json_error(raw_exchange(server[0], data, source="127.4.0.1")) == expected


def test_502_json_while_nothing_listens_on_the_app_socket(server, images):
    url, front, _ = server
    socket_path = front.run_dir / "app.sock"
    away = socket_path.with_name("app.sock.away")
    socket_path.rename(away)  # gunicorn is down, as far as nginx can tell
    try:
        status, headers, body = predict(url, "127.4.0.2", images[0])
    finally:
        away.rename(socket_path)
    assert (status, headers["content-type"], error_code(body)) == (502, "application/json", "bad_gateway")
    assert predict(url, "127.4.0.2", images[0])[0] == 200


# ---------------------------------------------------------------------------------------
# Static files and the model copy, from nginx

def test_static_files_are_compressed_and_revalidated_and_readable_from_another_origin(server):
    url = server[0]
    status, headers, body = request(url, "GET", WASM, "127.5.0.1", headers={"Accept-Encoding": "gzip", "Origin": "https://elsewhere.example"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    size = (ROOT / WASM.lstrip("/")).stat().st_size
    assert len(body) < size / 2  # WebAssembly compresses well (docs/front.md has the figures)
    assert headers["access-control-allow-origin"] == "*" and headers["cache-control"] == "no-cache"
    status, headers, _ = request(url, "GET", "/static/app.css", "127.5.0.1")
    assert status == 200 and headers["etag"] and headers["last-modified"]
    assert request(url, "GET", "/static/app.css", "127.5.0.1", headers={"If-None-Match": headers["etag"]})[0] == 304


def test_the_model_copy_is_checked_by_the_app_and_sent_by_nginx(server):
    url, _, log = server
    served = (ROOT / SHIPPED["DEVICE_MODEL_PATH"]).read_bytes()
    status, headers, body = request(url, "GET", "/model.onnx", "127.5.0.2")
    # Compared by hash: pytest's account of two unequal files of megabytes takes hours.
    assert status == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(served).hexdigest()
    assert headers["access-control-allow-origin"] == "*" and headers["cache-control"] == "no-cache"
    assert request(url, "GET", "/model.onnx", "127.5.0.2", headers={"If-None-Match": headers["etag"]})[0] == 304
    # A client cannot ask the app to hand nginx another file.
    status, _, body = request(url, "GET", "/model.onnx", "127.5.0.2",
                              headers={"X-Sendfile-Type": "X-Accel-Redirect", "X-Accel-Mapping": "/=/_front/app-files/"})
    assert status == 200 and len(body) == len(served)
    assert request(url, "GET", "/_front/app-files/model.zip", "127.5.0.2")[0] == 404


def test_nginx_workers_never_run_as_root(server):
    """Started as root (CI), nginx's workers run as the app's owner or nobody; else as its user."""
    front = server[1]
    workers = child_pids(front.nginx_pid)
    assert workers
    for pid in workers:
        uid = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")).split()[1])
        assert uid != 0, f"nginx worker {pid} runs as root"
        if os.geteuid() != 0:
            assert uid == os.geteuid()


# ---------------------------------------------------------------------------------------
# One dies, both stop

@pytest.mark.parametrize("victim", ["nginx", "gunicorn"])
def test_the_server_stops_when_nginx_or_gunicorn_dies(victim, tmp_path):
    with procfile_server(log_path=tmp_path / "server.log") as (url, front):
        pid = front.nginx_pid if victim == "nginx" else front.gunicorn_pid
        other = front.gunicorn_pid if victim == "nginx" else front.nginx_pid
        run_dir = front.run_dir
        os.kill(pid, signal.SIGKILL)
        front.process.wait(timeout=60)
        assert front.process.returncode != 0
        assert not Path(f"/proc/{other}").exists() or "zombie" in Path(f"/proc/{other}/status").read_text()
        assert not run_dir.exists()
        assert f"{'nginx' if victim == 'nginx' else 'the app'} exited" in (tmp_path / "server.log").read_text()
