"""Clients for a real server on loopback: one request, raw bytes on a socket, or threads that
send requests and note every outcome; and what gunicorn's processes look like (their ids,
their memory) from /proc."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from .servers import child_pids


@dataclass
class Outcome:
    """One request: its status and parsed body, or the error that stopped it."""

    kind: str
    started: float
    finished: float
    status: int | None = None
    body: object = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None


def raw_exchange(url: str, data: bytes, source: str | None = None) -> bytes:
    """Send ``data`` on a raw socket (from ``source``, a loopback address, if given), close our
    side so the server sees where it ends, and read the whole answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30,
                                  source_address=(source, 0) if source else None) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking it all
            pass
        return read_response(sock)


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def send(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60) -> tuple[int, object]:
    """One request on a fresh connection (the sync worker closes each): (status, JSON or bytes)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw
    finally:
        connection.close()


def send_unless_refused(url: str, path: str, body: bytes, headers: dict,
                        timeout: float = 60) -> tuple[str, int | None, object]:
    """POST on a fresh connection: ("refused", None, None) where nothing accepts it, else as
    ``send`` does, with kind "sent". An error once connected (reset, broken pipe, no answer)
    is raised: the server took the request and did not answer it."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        try:
            connection.connect()
        except ConnectionRefusedError:
            return "refused", None, None
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return "sent", response.status, response.read()
    finally:
        connection.close()


def slow_post(url: str, path: str, body: bytes, headers: dict, seconds: float,
              timeout: float = 60) -> tuple[int, bytes]:
    """POST ``body`` spread over ``seconds`` in 50 pieces, as a phone on a slow link sends it;
    (status, body). An error (reset, no answer) is raised."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.putrequest("POST", path)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders()
        piece = -(-len(body) // 50)
        for start in range(0, len(body), piece):
            connection.send(body[start:start + piece])
            time.sleep(seconds / 50)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Load:
    """Client threads that repeat ``request(thread_index, count)`` until stopped or done.

    ``request`` returns (kind, status, body); an exception is noted as a failed request.
    """

    request: Callable[[int, int], tuple[str, int, object]]
    threads: int = 4
    total: int | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]

    def __enter__(self) -> "Load":
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=120)

    def wait(self, timeout: float = 600) -> None:
        """Wait until ``total`` requests have been sent."""
        for worker in self._workers:
            worker.join(timeout=timeout)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def failures(self) -> list[Outcome]:
        with self._lock:
            return [outcome for outcome in self.outcomes if not outcome.ok]

    def _next_index(self) -> int | None:
        with self._lock:
            index = len(self.outcomes) + self._in_flight
            if self.total is not None and index >= self.total:
                return None
            self._in_flight += 1
            return index

    def _run(self, thread_index: int) -> None:
        while not self._stop.is_set():
            index = self._next_index()
            if index is None:
                return
            started = time.monotonic()
            try:
                kind, status, body = self.request(thread_index, index)
                outcome = Outcome(kind, started, time.monotonic(), status=status, body=body)
            except Exception as error:  # a dropped connection is what some tests count
                outcome = Outcome("error", started, time.monotonic(), error=f"{type(error).__name__}: {error}")
            with self._lock:
                self._in_flight -= 1
                self.outcomes.append(outcome)


def post_round(url: str, bodies: list[tuple[bytes, str]], count: int, clients: int) -> tuple[float, list[float]]:
    """Requests/s and every latency (ms) of ``count`` POST /predict by ``clients`` threads taking
    the (body, Content-Type) pairs in turn; RuntimeError if any answer is not 200."""
    requests = [("/predict", body, {"Content-Type": content_type}) for body, content_type in bodies]
    return timed_posts(url, requests, count, clients)


def timed_posts(url: str, requests: list[tuple[str, bytes, dict]], count: int,
                clients: int) -> tuple[float, list[float]]:
    """``post_round`` for any (path, body, headers) requests, taken in turn."""
    def request(_thread: int, index: int):
        return "post", *send(url, "POST", *requests[index % len(requests)])

    load = Load(request, threads=clients, total=count)
    started = time.perf_counter()
    with load:
        load.wait()
    seconds = time.perf_counter() - started
    failures = [outcome for outcome in load.outcomes if outcome.status != 200]
    if failures:
        first = failures[0]
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {first.status} {first.error or first.body}")
    return count / seconds, [(outcome.finished - outcome.started) * 1000 for outcome in load.outcomes]


def worker_pids(master_pid: int) -> set[int]:
    """gunicorn's workers: the master's child processes."""
    return set(child_pids(master_pid))


def wait_for_workers(master_pid: int, count: int, exclude: set[int] = frozenset(), timeout: float = 90) -> set[int]:
    """Wait until the master has ``count`` workers, none of them in ``exclude``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(master_pid)
        if len(pids) == count and not pids & set(exclude):
            return pids
        time.sleep(0.1)
    raise TimeoutError(f"gunicorn has workers {worker_pids(master_pid)}, wanted {count} new ones")


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory (RSS) and proportional set size (PSS: shared pages split) in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss_kb = int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
    return {"rss_mb": round(rss_kb / 1024, 1), "pss_mb": round(pss_kb / 1024, 1)}


def wait_until(condition: Callable[[], bool], timeout: float = 180, what: str = "the condition") -> None:
    """Poll ``condition``; fail the test rather than hang if it never holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.05)
