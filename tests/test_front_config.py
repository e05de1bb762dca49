"""The nginx configuration the front fills in (config/nginx.conf.template), checked by the real
nginx: alone, with nothing on the app's socket (so that what it proxies answers 502), and
through bin/start-nginx around a stand-in app. Then the app's side of the front and gunicorn.

The whole server, with slow clients and floods, is tests/test_front.py; these are quick.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from app import create_app
from front.config import render
from front.files import files_root_for, hand_run_dir_to, nginx_user, readable_by
from front.start import Front, find_nginx, metrics_directory
from web import api as prediction_api
from web.errors import ERRORS
from web.settings import SettingError, read_settings

from testing import ROOT
from testing.servers import free_port


def settings(**env) -> dict:
    return read_settings({"PORT": "8000", **env})


def rendered(tmp_path, **env) -> str:
    return render(settings(**env), tmp_path, ROOT)


def block(text: str, opening: str) -> str:
    """The lines of ``text`` from ``opening`` to the end of its block."""
    start = text.index(opening)
    return text[start:re.compile(r"^\s*}$", re.M).search(text, start).end()]


def nginx_accepts(tmp_path, text: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    command = [find_nginx(settings()), "-p", str(tmp_path), "-c", str(conf), "-e", "stderr", "-t"]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.mark.parametrize("env", [
    {},
    {"RATE_LIMIT": "0", "CONNECTION_LIMIT": "0"},
    {"RATE_LIMIT": "0.5", "RATE_LIMIT_BURST": "0"},
    {"CORS_ORIGINS": "https://a.example, https://b.example"},
    {"TRUSTED_PROXIES": "10.0.0.0/8,fd00::/8"},
    {"DYNO": "web.1", "LISTEN_ADDRESS": "::1", "MAX_UPLOAD_MB": "5", "NGINX_WORKERS": "1"},
], ids=["defaults", "limits-off", "slow-rate", "cors-list", "trusted-proxies", "dyno-ipv6"])
def test_nginx_accepts_every_rendering(tmp_path, env):
    result = nginx_accepts(tmp_path, rendered(tmp_path, **env))
    assert result.returncode == 0, result.stderr


def test_defaults_limit_each_client_on_the_prediction_routes_only(tmp_path):
    text = rendered(tmp_path)
    assert "zone=predictions:10m rate=600r/m;" in text  # 10 a second
    predictions = block(text, "location ~ ^/(predict(/|$)|feedback$|device-predictions$|"
                              "v2/models/[^/]+(/versions/[^/]+)?/infer$) {")
    assert "limit_req zone=predictions burst=20 nodelay;" in predictions
    assert "limit_conn prediction_connections 10;" in predictions
    assert text.count("limit_req zone=") == 1 and text.count("limit_conn prediction_connections") == 1
    # Each limit's key is the client, and empty (not counted) only for a setting of 0.
    keys = {"RATE_LIMIT": "$rate_limited_client", "CONNECTION_LIMIT": "$connection_limited_client"}
    for limit, key in keys.items():
        assert f'map 10 {key} {{\n        0 "";\n        default $client_address;' in text, limit
        assert f'map 0 {key} {{\n        0 "";' in rendered(tmp_path, **{limit: "0"})


def test_x_forwarded_for_is_believed_only_from_trusted_peers(tmp_path):
    def trusted(**env) -> list[str]:
        return re.findall(r"(\S+) 1;", block(rendered(tmp_path, **env), "geo $trusted_peer {"))

    # Off a dyno nothing is trusted: a client's own header would let it pick its address.
    assert trusted() == []
    # On a dyno only the router reaches the process; its hop is the last element.
    assert trusted(DYNO="web.1") == ["0.0.0.0/0", "::/0"]
    assert trusted(DYNO="web.1", TRUSTED_PROXIES="10.1.2.0/24") == ["10.1.2.0/24"]
    assert trusted(DYNO="web.1", TRUSTED_PROXIES="") == []
    client = block(rendered(tmp_path), 'map "$trusted_peer,$http_x_forwarded_for" $client_address {')
    assert "default $remote_addr;" in client  # an untrusted peer is the client
    assert r'"~^1,(.*,)?\s*(?<router_hop>' in client  # a trusted one's last hop is


def test_every_error_nginx_answers_is_json_with_its_status(tmp_path):
    text = rendered(tmp_path)
    bodies = dict(re.findall(r"^\s+(\d{3}) '(.*)\\n';$", block(text, "map $status $error_body {"), re.M))
    assert sorted(bodies) == ["400", "404", "405", "408", "413", "414", "429", "500", "502", "503", "504"]
    for status, body in bodies.items():
        error = json.loads(body)["error"]
        assert ERRORS[error["code"]].status == int(status) and error["message"]
    assert "error_page 404 405 408 413 429 500 502 503 504 @error;" in text
    assert "error_page 400 414 /_front/errors/request-line;" in text
    assert "error_page 494 =400 /_front/errors/request-header-too-large;" in text
    header_too_large = block(text, "location = /_front/errors/request-header-too-large {")
    assert json.loads(re.search(r"return 200 '(.*)\\n';", header_too_large).group(1))["error"]["code"] == \
        "request_header_too_large"
    assert "429 1;" in block(text, "map $status $retry_after {")


@pytest.mark.parametrize("env, message", [
    ({"PORT": "http"}, "PORT must be an integer"),
    ({"RATE_LIMIT": "fast"}, "RATE_LIMIT must be a number"),
    ({"RATE_LIMIT": "-1"}, "RATE_LIMIT must be at least 0"),
    ({"RATE_LIMIT": "0.001"}, "at least one a minute"),
    ({"CONNECTION_LIMIT": "-2"}, "CONNECTION_LIMIT must be at least 0"),
    ({"CLIENT_TIMEOUT": "0"}, "CLIENT_TIMEOUT must be at least 1"),
    ({"LISTEN_ADDRESS": "localhost"}, "LISTEN_ADDRESS must be an IP address"),
    ({"TRUSTED_PROXIES": "the router"}, "TRUSTED_PROXIES must be"),
])
def test_a_bad_setting_stops_the_front_with_the_reason(env, message):
    with pytest.raises(SettingError, match=message):
        settings(**env)


def test_start_nginx_exits_with_the_reason_before_starting_the_app(tmp_path):
    marker = tmp_path / "app-started"
    result = subprocess.run([str(ROOT / "bin" / "start-nginx"), "touch", str(marker)], cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin", "PORT": "8000", "RATE_LIMIT": "fast"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "RATE_LIMIT must be a number" in result.stderr
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# nginx alone, on the configuration the front prepares

@contextmanager
def nginx_alone(app_root: Path = ROOT, **env):
    """nginx as the front prepares it for ``env``, on a free loopback port, with no app: its URL."""
    port = free_port()
    values = settings(PORT=str(port), LISTEN_ADDRESS="127.0.0.1", **env)
    front = Front([], values, find_nginx(values), app_root)
    try:
        front.prepare()
        nginx = subprocess.Popen(front.nginx_command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not answers(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            nginx.terminate()
            nginx.wait(timeout=30)
    finally:
        shutil.rmtree(front.run_dir, ignore_errors=True)


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def fetch(url: str, method: str, path: str, headers: dict | None = None, source: str = "127.0.0.1"):
    """One request on its own connection: (status, headers with lower-case names, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10,
                                            source_address=(source, 0))
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def hold_an_upload(url: str, source: str) -> socket.socket:
    """A prediction request whose headers are sent and whose body never ends: one in progress."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                 b"Content-Length: 5000\r\n\r\n\xff")
    return sock


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


@pytest.mark.slow
def test_a_rate_under_one_a_second_is_per_minute_and_retry_after_waits_for_it():
    with nginx_alone(RATE_LIMIT="0.5", RATE_LIMIT_BURST="0", CONNECTION_LIMIT="0") as url:
        # Nothing on the app's socket: nginx's JSON 502, and the request counts all the same.
        status, _, body = fetch(url, "POST", "/predict", source="127.6.0.1")
        assert (status, error_code(body)) == (502, "bad_gateway")
        status, headers, body = fetch(url, "POST", "/predict", source="127.6.0.1")
        assert (status, error_code(body), headers["retry-after"]) == (429, "rate_limited", "2")
        assert headers["content-type"] == "application/json" and headers["access-control-allow-origin"] == "*"
        assert fetch(url, "GET", "/health", source="127.6.0.1")[0] == 502  # only the prediction routes
        assert fetch(url, "POST", "/predict", source="127.6.0.2")[0] == 502  # another client


@pytest.mark.slow
def test_a_client_with_too_many_requests_in_progress_gets_429():
    with nginx_alone(RATE_LIMIT="0", CONNECTION_LIMIT="1") as url:
        held = hold_an_upload(url, "127.6.0.3")
        try:
            deadline = time.monotonic() + 10
            status, _, body = fetch(url, "POST", "/predict", source="127.6.0.3")
            # Until nginx has read the held one's headers.
            while status != 429 and time.monotonic() < deadline:
                time.sleep(0.1)
                status, _, body = fetch(url, "POST", "/predict", source="127.6.0.3")
            assert (status, error_code(body)) == (429, "rate_limited")
            assert fetch(url, "POST", "/predict", source="127.6.0.4")[0] == 502
        finally:
            held.close()


@pytest.mark.slow
def test_zero_turns_each_limit_off():
    with nginx_alone(RATE_LIMIT="0", CONNECTION_LIMIT="0") as url:
        held = [hold_an_upload(url, "127.6.0.5") for _ in range(3)]
        try:
            time.sleep(0.5)  # nginx has read their headers
            statuses = [fetch(url, "POST", "/predict", source="127.6.0.5")[0] for _ in range(30)]
        finally:
            for sock in held:
                sock.close()
    assert statuses == [502] * 30


@pytest.mark.slow
def test_static_files_cached_by_their_name_and_readable_by_the_listed_origins(tmp_path):
    """A content-hashed name is cached for a year, others revalidated; CORS_ORIGINS says who reads them."""
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "main.0123abcd.js").write_text("export const hashed = 1;\n")
    (tmp_path / "static" / "main.js").write_text("export const plain = 1;\n")
    with nginx_alone(app_root=tmp_path, CORS_ORIGINS="https://a.example,https://b.example") as url:
        status, headers, _ = fetch(url, "GET", "/static/main.0123abcd.js", {"Origin": "https://b.example"})
        assert status == 200 and headers["cache-control"] == "public, max-age=31536000, immutable"
        assert headers["content-type"] == "application/javascript"
        assert headers["access-control-allow-origin"] == "https://b.example"
        status, headers, _ = fetch(url, "GET", "/static/main.js", {"Origin": "https://a.example"})
        assert status == 200 and headers["cache-control"] == "no-cache" and headers["etag"]
        assert headers["access-control-allow-origin"] == "https://a.example"
        for stranger in ("https://c.example", "https://a.example.evil", "https://a.example,https://b.example",
                         "null"):
            headers = fetch(url, "GET", "/static/main.js", {"Origin": stranger})[1]
            assert "access-control-allow-origin" not in headers
        status, headers, body = fetch(url, "GET", "/static/missing.js", {"Origin": "https://a.example"})
        assert (status, headers["content-type"], error_code(body)) == (404, "application/json", "not_found")
        assert headers["access-control-allow-origin"] == "https://a.example"
        status, headers, body = fetch(url, "DELETE", "/static/main.js")
        assert (status, error_code(body), headers["allow"]) == (405, "method_not_allowed", "GET, HEAD")
        assert "allow" not in fetch(url, "GET", "/static/missing.js")[1]


# ---------------------------------------------------------------------------------------
# bin/start-nginx around a stand-in app

@pytest.mark.slow
def test_nginx_opens_the_port_only_once_the_app_says_it_is_ready(tmp_path):
    """bin/start-nginx with a stand-in app that writes APP_READY_FILE when the test says so.

    NGINX is set, as a shell or an old Makefile may leave it: nginx would read it as sockets
    handed over by an older nginx ("[emerg] invalid socket number"), so the front drops it.
    """
    gate, seen = tmp_path / "go", tmp_path / "app-env.json"
    app = (
        "import json, os, pathlib, time\n"
        f"pathlib.Path({str(seen)!r}).write_text(json.dumps(dict(os.environ)))\n"
        f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
        "pathlib.Path(os.environ['APP_READY_FILE']).write_text('ready')\n"
        "time.sleep(120)\n"
    )
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "LISTEN_ADDRESS": "127.0.0.1",
           "NGINX": find_nginx(settings())}
    front = subprocess.Popen([str(ROOT / "bin" / "start-nginx"), sys.executable, "-c", app], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)  # long enough for a front that did not wait to have opened the port
        assert not answers(port), "nginx listened before the app was ready"
        gate.touch()
        deadline = time.monotonic() + 30
        while not answers(port) and time.monotonic() < deadline and front.poll() is None:
            time.sleep(0.05)
        # Nothing listens on the app's socket (the stand-in never binds it): nginx's JSON 502.
        status, _, body = fetch(f"http://127.0.0.1:{port}", "GET", "/health")
        assert (status, error_code(body)) == (502, "bad_gateway")
        app_env = json.loads(seen.read_text())
    finally:
        front.terminate()
        _, log = front.communicate(timeout=60)
    assert front.returncode == 0, log  # SIGTERM stops both and is not a failure
    assert "[emerg]" not in log and "NGINX environment variable" not in log, log
    run_dir = Path(re.search(r"on (\S+)/app\.sock", log).group(1))
    # The workers' metrics files live in the run directory, which goes with the front.
    assert app_env["PROMETHEUS_MULTIPROC_DIR"] == str(run_dir / "prometheus")
    assert not run_dir.exists()


def test_the_metrics_directory_is_the_run_directorys_unless_set_and_starts_empty(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert metrics_directory("", run_dir) == run_dir / "prometheus" and (run_dir / "prometheus").is_dir()
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"an earlier run's counts")
    (directory / "keep.txt").write_text("not ours")
    assert metrics_directory(str(directory), run_dir) == directory
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]


def test_nginx_workers_get_a_snapshot_of_an_app_folder_they_cannot_read(tmp_path):
    """pytest's tmp_path is private (0700): as root, nobody cannot read an app in there."""
    app_root = tmp_path / "app"
    (app_root / "static" / "js").mkdir(parents=True)
    (app_root / "static" / "js" / "main.js").write_text("export {};\n")
    (app_root / "model.onnx").write_bytes(b"onnx")
    run_dir = Path(tempfile.mkdtemp(prefix="front-test-"))  # as bin/start-nginx makes it
    try:
        user = nginx_user(find_nginx(settings()))
        hand_run_dir_to(user, run_dir)
        files_root = files_root_for(user, app_root, run_dir, "model.onnx")
        if user is None:  # not root: nginx runs as this user, who can read its own folder
            assert files_root == app_root
        else:
            assert user != "root"
            assert files_root == run_dir / "app-files"
            assert (files_root / "static" / "js" / "main.js").read_text() == "export {};\n"
            assert (files_root / "model.onnx").read_bytes() == b"onnx"
            assert readable_by(user, [files_root / "static", files_root / "model.onnx"])
            assert not readable_by(user, [app_root / "static"])
    finally:
        shutil.rmtree(run_dir)


# ---------------------------------------------------------------------------------------
# The app's side

def test_behind_the_front_the_app_logs_the_client_nginx_names(monkeypatch):
    """gunicorn on the front's unix socket has no peer address; nginx's header gives it."""
    from flask import request

    seen = []

    def client_of_a_new_app():
        app = create_app({"TESTING": True, "LOAD_MODEL": False})
        app.before_request(lambda: seen.append(request.remote_addr))
        return app.test_client()

    monkeypatch.setenv("APP_SOCKET", "/run/front/app.sock")  # as the front starts the app
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    client_of_a_new_app().get("/health", environ_base={"REMOTE_ADDR": ""}, headers=forwarded)
    # Serving clients itself (no front), a TCP peer keeps its own address whatever its header says.
    monkeypatch.delenv("APP_SOCKET")
    client_of_a_new_app().get("/health", environ_base={"REMOTE_ADDR": "198.51.100.1"}, headers=forwarded)
    assert seen == ["203.0.113.9", "198.51.100.1"]


def test_the_heap_is_trimmed_after_a_large_request_once_its_answer_is_sent(monkeypatch):
    trims = []
    monkeypatch.setattr(prediction_api, "trim_heap", lambda: trims.append(1))
    client = create_app({"TESTING": True, "LOAD_MODEL": False}).test_client()
    small = client.post("/predict", data=b"x" * 1000, content_type="image/jpeg")
    small.close()
    large = client.post("/predict", data=b"x" * prediction_api.LARGE_BODY_BYTES, content_type="image/jpeg")
    assert trims == []  # not before the answer is sent
    large.close()
    assert trims == [1]
    client.post("/predict/batch", data=b"", content_type="multipart/form-data; boundary=b").close()
    assert trims == [1, 1]
