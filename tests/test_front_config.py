"""The front's settings and the nginx configuration they render, checked by the real nginx,
and bin/start-nginx's start-up around a stand-in app.

The server itself, with slow clients and floods, is tests/test_front.py; these are quick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from front.config import FrontSettingError, FrontSettings, RunPaths, nginx_user_when_root, render
from front.files import files_root_for, hand_run_dir_to, readable_by
from front.start import find_nginx

from testing import ROOT
from testing.servers import free_port


def settings(**env) -> FrontSettings:
    return FrontSettings.from_env({"PORT": "8000", **env})


def rendered(tmp_path, **env) -> str:
    return render(settings(**env), RunPaths(tmp_path))


def nginx_accepts(tmp_path, text: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return subprocess.run([find_nginx(), "-p", str(tmp_path), "-c", str(conf), "-e", "stderr", "-t"],
                          capture_output=True, text=True)


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
    assert "rate=10r/s;" in text and "limit_req zone=predictions burst=20 nodelay;" in text
    assert "limit_conn prediction_connections 10;" in text
    predictions = text[text.index("location ~ ^/(predict(/|$)|feedback$) {"):]
    assert predictions.index("limit_req ") < predictions.index("}")
    assert text.count("limit_req zone=") == 1 and text.count("limit_conn prediction_connections") == 1


def test_zero_turns_each_limit_off(tmp_path):
    text = rendered(tmp_path, RATE_LIMIT="0", CONNECTION_LIMIT="0")
    assert "limit_req zone" not in text and "limit_req_zone" not in text and "limit_conn prediction" not in text
    assert "limit_conn " not in rendered(tmp_path, CONNECTION_LIMIT="0").replace("limit_conn_", "")


def test_a_rate_under_one_a_second_is_per_minute_and_retry_after_waits_for_it(tmp_path):
    text = rendered(tmp_path, RATE_LIMIT="0.5")
    assert "rate=30r/m;" in text and "add_header Retry-After 2 always;" in text


def test_x_forwarded_for_is_believed_only_from_trusted_peers(tmp_path):
    # Off a dyno nothing is trusted: a client's own header would let it pick its address.
    assert "set_real_ip_from" not in rendered(tmp_path)
    # On a dyno only the router reaches the process; its hop is the last element.
    on_dyno = rendered(tmp_path, DYNO="web.1")
    assert "set_real_ip_from 0.0.0.0/0;" in on_dyno and "real_ip_recursive off;" in on_dyno
    chosen = rendered(tmp_path, DYNO="web.1", TRUSTED_PROXIES="10.1.2.0/24")
    assert re.findall(r"set_real_ip_from (\S+);", chosen) == ["10.1.2.0/24"]
    assert "set_real_ip_from" not in rendered(tmp_path, DYNO="web.1", TRUSTED_PROXIES="")


def test_every_error_nginx_answers_is_json_with_its_status(tmp_path):
    text = rendered(tmp_path)
    for status in (400, 404, 405, 408, 413, 414, 429, 500, 502, 503, 504):
        where = f"/_front/errors/{status}" if status in (400, 414) else f"@front_error_{status}"
        assert f"error_page {status} {where};" in text
        block = text[text.index(f" {where} {{"):]
        body = re.search(r"return 200 '(.*)\\n';", block).group(1)
        error = json.loads(body)["error"]
        assert error["code"] and error["message"]
    assert "error_page 494 =400 /_front/errors/494;" in text


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
    with pytest.raises(FrontSettingError, match=message):
        FrontSettings.from_env({"PORT": "8000", **env})


def test_start_nginx_exits_with_the_reason_before_starting_the_app(tmp_path):
    marker = tmp_path / "app-started"
    result = subprocess.run([str(ROOT / "bin" / "start-nginx"), "touch", str(marker)], cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin", "PORT": "8000", "RATE_LIMIT": "fast"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "RATE_LIMIT must be a number" in result.stderr
    assert not marker.exists()


def test_behind_the_front_the_app_logs_the_client_nginx_names(client):
    """gunicorn on the front's unix socket has no peer address; nginx's header gives it."""
    from flask import request

    seen = []
    client.application.before_request_funcs.setdefault(None, []).append(lambda: seen.append(request.remote_addr))
    client.get("/health", environ_base={"REMOTE_ADDR": ""}, headers={"X-Forwarded-For": "203.0.113.9"})
    # A TCP peer keeps its own address whatever its header says.
    client.get("/health", environ_base={"REMOTE_ADDR": "198.51.100.1"}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert seen == ["203.0.113.9", "198.51.100.1"]


@pytest.mark.slow
def test_nginx_opens_the_port_only_once_the_app_says_it_is_ready(tmp_path):
    """bin/start-nginx with a stand-in app that writes APP_READY_FILE when the test says so."""
    gate = tmp_path / "go"
    app = (
        "import os, pathlib, time\n"
        f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
        "pathlib.Path(os.environ['APP_READY_FILE']).write_text('ready')\n"
        "time.sleep(120)\n"
    )
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "LISTEN_ADDRESS": "127.0.0.1"}
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
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            raise AssertionError(f"expected 502, got {response.status}")
    except urllib.error.HTTPError as error:
        assert error.code == 502 and json.loads(error.read())["error"]["code"] == "bad_gateway"
    finally:
        front.terminate()
        _, log = front.communicate(timeout=60)
    assert front.returncode == 0, log  # SIGTERM stops both and is not a failure
    run_dir = re.search(r"on (\S+)/app\.sock", log).group(1)
    assert not Path(run_dir).exists()


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_a_content_hashed_name_is_cached_for_a_year_and_others_revalidated(tmp_path):
    """nginx alone on the rendered configuration, serving a stand-in app directory."""
    # Outside pytest's private tmp_path: started as root, nginx's workers run as nobody.
    app_root = Path(tempfile.mkdtemp(prefix="front-app-"))
    app_root.chmod(0o755)
    (app_root / "static").mkdir()
    (app_root / "static" / "main.0123abcd.js").write_text("export const hashed = 1;\n")
    (app_root / "static" / "main.js").write_text("export const plain = 1;\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    port = free_port()
    conf = run_dir / "nginx.conf"
    conf.write_text(render(settings(PORT=str(port), LISTEN_ADDRESS="127.0.0.1"), RunPaths(run_dir), app_root))
    nginx = subprocess.Popen([find_nginx(), "-p", str(run_dir), "-c", str(conf), "-e", "stderr"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not answers(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/main.0123abcd.js", timeout=10) as response:
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert response.headers["Content-Type"] == "application/javascript"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/main.js", timeout=10) as response:
            assert response.headers["Cache-Control"] == "no-cache" and response.headers["ETag"]
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
        shutil.rmtree(app_root)


def test_nginx_workers_get_a_snapshot_of_an_app_folder_they_cannot_read(tmp_path):
    """pytest's tmp_path is private (0700): as root, nobody cannot read an app in there."""
    app_root = tmp_path / "app"
    (app_root / "static" / "js").mkdir(parents=True)
    (app_root / "static" / "js" / "main.js").write_text("export {};\n")
    (app_root / "model.onnx").write_bytes(b"onnx")
    run_dir = Path(tempfile.mkdtemp(prefix="front-test-"))  # as bin/start-nginx makes it
    try:
        user = nginx_user_when_root(app_root)
        hand_run_dir_to(user, run_dir)
        files_root = files_root_for(user, app_root, run_dir)
        if user is None:  # not root: nginx runs as this user, who can read its own folder
            assert files_root == app_root
        else:
            assert files_root == run_dir / "app-files"
            assert (files_root / "static" / "js" / "main.js").read_text() == "export {};\n"
            assert (files_root / "model.onnx").read_bytes() == b"onnx"
            assert readable_by(user.split()[0], [files_root / "static", files_root / "model.onnx"])
            assert not readable_by(user.split()[0], [app_root / "static"])
    finally:
        shutil.rmtree(run_dir)
