"""Hostile clients against the real Procfile server: slow ones, huge bodies, raw garbage.

nginx (the front) reads every request whole before a worker sees it, so a slow client holds
a connection, never a worker. CLIENT_TIMEOUT is 5 s here: a client whose headers take longer,
or whose body stops for that long, is dropped. After each attack the same two workers must still be there (none was
killed) and a normal request must be answered.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testing.load import raw_exchange, read_response, send, wait_for_workers, worker_pids
from testing.multipart import form_body
from testing.samples import image_bytes
from testing.servers import procfile_server

pytestmark = pytest.mark.slow

CLIENT_TIMEOUT = 5
RED = image_bytes("PNG", colour=(255, 0, 0))
UPLOAD_LIMIT_MB = 20  # the default MAX_UPLOAD_MB


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_path):
    log = tmp_path_factory.mktemp("hostile") / "gunicorn.log"
    env = {"MODEL_PATH": str(tiny_model_path), "CLIENT_TIMEOUT": str(CLIENT_TIMEOUT)}
    with procfile_server(env=env, log_path=log) as (url, master):
        workers = wait_for_workers(master.pid, 2)
        yield url, master, workers, log


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def assert_unharmed(server):
    """The same workers as at the start (none killed or stuck) and a normal answer."""
    url, master, workers, log = server
    status, body = send(url, "POST", "/predict", RED, {"Content-Type": "image/png"})
    assert status == 200 and body["label"] == "red"
    assert worker_pids(master.pid) == workers, log.read_text()[-3000:]
    assert "WORKER TIMEOUT" not in log.read_text()


class SlowClient(threading.Thread):
    """Sends ``at_once``, then ``slowly`` a byte every ``pause`` seconds, then ``rest``; reads the answer."""

    def __init__(self, url: str, at_once: bytes, slowly: bytes = b"", pause: float = 0.3, rest: bytes = b""):
        super().__init__(daemon=True)
        self.url, self.at_once, self.slowly, self.pause, self.rest = url, at_once, slowly, pause, rest
        self.answer: bytes | None = None

    def run(self):
        with socket.create_connection(address(self.url), timeout=30) as sock:
            try:
                sock.sendall(self.at_once)
                for byte in self.slowly:
                    sock.sendall(bytes([byte]))
                    time.sleep(self.pause)
                sock.sendall(self.rest)
            except OSError:  # the server gave up on us: what it said is in the socket
                pass
            self.answer = read_response(sock)


PREDICT_HEAD = (
    "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nConnection: close\r\n"
    f"Content-Length: {len(RED)}\r\n\r\n"
).encode()


def test_slow_clients_hold_no_worker_and_are_served_when_their_request_is_whole(server):
    url = server[0]
    # Two slow clients per worker, each taking seconds to send its headers or its body.
    slow = [SlowClient(url, b"", PREDICT_HEAD[:10], rest=PREDICT_HEAD[10:] + RED) for _ in range(2)]
    slow += [SlowClient(url, PREDICT_HEAD, RED[:10], rest=RED[10:]) for _ in range(2)]
    for client in slow:
        client.start()
    time.sleep(0.5)
    # Meanwhile the workers are free for everyone else.
    for _ in range(3):
        status, body = send(url, "POST", "/predict", RED, {"Content-Type": "image/png"})
        assert status == 200 and body["label"] == "red"
    assert all(client.is_alive() for client in slow), "a slow client was done before the others were served"
    for client in slow:
        client.join(60)
        assert client.answer.startswith(b"HTTP/1.1 200") and b'"label":"red"' in client.answer, client.answer[:300]
    assert_unharmed(server)


def test_a_client_that_stalls_is_dropped_after_client_timeout(server):
    url = server[0]
    stalled_headers = SlowClient(url, PREDICT_HEAD[:20])
    stalled_body = SlowClient(url, PREDICT_HEAD + RED[:10])
    stalled_headers.start()
    stalled_body.start()
    assert [send(url, "GET", "/health")[0] for _ in range(3)] == [200, 200, 200]
    stalled_headers.join(60)
    stalled_body.join(60)
    # nginx drops both without an answer (a client that stopped sending is not listening
    # either) and logs the body's as 408; no worker ever saw them.
    assert stalled_headers.answer == b"" and stalled_body.answer == b""
    assert '"POST /predict HTTP/1.1" 408' in server[3].read_text()
    assert_unharmed(server)


@pytest.mark.parametrize("claimed", [(UPLOAD_LIMIT_MB + 5) * 2**20, 10**15])
def test_a_body_claiming_more_than_the_limit_is_413_before_it_is_sent(server, claimed):
    url = server[0]
    head = (
        f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\nContent-Length: {claimed}\r\n\r\n"
    ).encode()
    # Only the first megabyte is sent: the answer must not wait for the rest.
    answer = raw_exchange(url, head + b"\xff\xd8\xff" + bytes(2**20))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"payload_too_large"' in answer
    assert_unharmed(server)


OVER_THE_LIMIT = b"\xff\xd8\xff" + bytes((UPLOAD_LIMIT_MB + 1) * 2**20)


@pytest.mark.parametrize("form", [False, True], ids=["image/jpeg", "multipart/form-data"])
def test_a_streamed_body_over_the_limit_is_413(server, form):
    """Chunked: no Content-Length to check first, so the limit applies as the body is read."""
    url = server[0]
    body, content_type = form_body([("big.jpg", OVER_THE_LIMIT)]) if form else (OVER_THE_LIMIT, "image/jpeg")
    head = f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    step = 2**20
    chunks = b"".join(b"%x\r\n" % len(body[i : i + step]) + body[i : i + step] + b"\r\n" for i in range(0, len(body), step))
    answer = raw_exchange(url, head.encode() + chunks + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"code":"payload_too_large"' in answer
    assert_unharmed(server)


def test_a_streamed_image_under_the_limit_is_classified(server):
    url = server[0]
    head = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = raw_exchange(url, head + b"%x\r\n" % len(RED) + RED + b"\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b'"label":"red"' in answer, answer[:300]


def test_a_huge_multipart_upload_is_413(server):
    url = server[0]
    body, content_type = form_body([("big.jpg", OVER_THE_LIMIT)])
    head = (
        f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = raw_exchange(url, head + body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"code":"payload_too_large"' in answer
    assert_unharmed(server)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    garbage=st.one_of(
        st.binary(min_size=1, max_size=2048),
        st.builds(lambda line, rest: line + b"\r\n" + rest + b"\r\n\r\n", st.sampled_from([b"POST /predict HTTP/1.1", b"GET /health HTTP/1.1", b"POST /predict/batch HTTP/1.0"]), st.binary(max_size=512)),
    )
)
def test_random_bytes_on_the_socket(server, garbage):
    """Whatever arrives on the wire: a 4xx, a correct answer, or a closed connection; never 5xx."""
    answer = raw_exchange(server[0], garbage)
    if answer:
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1."), answer[:200]
        status = int(status_line.split()[1])
        assert status < 500, answer[:300]
    assert_unharmed(server)
