"""Start the real `web:` process from the Procfile on a free loopback port, for tests and benchmarks.

The Procfile runs the front (bin/start-nginx): nginx on $PORT in front of gunicorn on a unix
socket. ``procfile_server`` yields the URL and a ``ProcfileServer``: its ``pid`` is gunicorn's
master (the process tests signal, whose children are the workers), its ``process`` the
Procfile's own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from deploy.paas import free_port, web_command  # noqa: F401 (free_port: for the tests)

from . import ROOT



def procfile_command(root: Path = ROOT) -> str:
    """The Procfile's ``web`` command at ``root``, read as the platform (deploy/paas.py) reads it."""
    command = web_command(root)
    if command is None:
        raise LookupError(f"no 'web' process in {root / 'Procfile'}")
    return command


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 90.0) -> float:
    """Poll /health until it answers 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url}/health did not answer 200 within {timeout:.0f}s")


def child_pids(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


class ProcfileServer:
    """The Procfile's process (bin/start-nginx) and the two it runs: gunicorn and nginx."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        children = child_pids(process.pid)
        nginx = [pid for pid in children if command_line(pid).startswith("nginx: master")]
        gunicorn = [pid for pid in children if pid not in nginx]
        if len(nginx) != 1 or len(gunicorn) != 1:
            raise RuntimeError(f"expected gunicorn and nginx under the front, found {[command_line(p) for p in children]}")
        self.nginx_pid, self.gunicorn_pid = nginx[0], gunicorn[0]

    @property
    def pid(self) -> int:
        """gunicorn's master: what tests signal, and whose children are the workers."""
        return self.gunicorn_pid

    @property
    def run_dir(self) -> Path:
        """The front's private directory: the app's socket, nginx's configuration."""
        arguments = command_line(self.nginx_pid).split()
        return Path(arguments[arguments.index("-p") + 1])


# Tests that drive load from one address turn the per-client limits off, or they would
# measure the limiter; tests/test_front.py runs the server with the limits as shipped.
NO_CLIENT_LIMITS = {"RATE_LIMIT": "0", "CONNECTION_LIMIT": "0"}


def procfile_env(port: int, env: dict | None = None, client_limits: bool = False) -> dict:
    """The environment the platform gives the web process, on loopback, with ``env`` on top."""
    return {
        **os.environ,
        "PORT": str(port),
        # The platform serves every interface; on a test machine we stay on loopback only.
        "LISTEN_ADDRESS": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **({} if client_limits else NO_CLIENT_LIMITS),
        **(env or {}),
    }


@contextmanager
def procfile_server(env: dict | None = None, log_path: Path | None = None, client_limits: bool = False):
    """Run the Procfile's web command as the platform would: PORT set, served on loopback."""
    port = free_port()
    environment = procfile_env(port, env, client_limits)
    command = procfile_command()
    log = open(log_path or os.devnull, "wb")
    process = subprocess.Popen(
        ["sh", "-c", f"exec {command}"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process)
        yield url, ProcfileServer(process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
