"""The HTTP contenders: how each is started, when it is ready, what memory it holds.

Each runs alone on a free loopback port, in its own process group so that stopping it
stops every process it started (gunicorn workers, LitServe's API and inference processes).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from testing.multipart import form_body
# All the load comes from one address, so the front's per-client limits would measure
# themselves: off here (docs/front.md says what they cost a client under them).
from testing.servers import NO_CLIENT_LIMITS, procfile_command

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Settings of ours that the caller's shell might hold; the benchmark serves the defaults.
_OUR_SETTINGS = ("WEB_CONCURRENCY", "TORCH_THREADS", "GUNICORN_TIMEOUT", "MAX_REQUESTS", "MODEL_PATH",
                 "INFERENCE_ENGINE", "ONNX_MODEL_PATH", "RATE_LIMIT", "RATE_LIMIT_BURST",
                 "CONNECTION_LIMIT", "CLIENT_TIMEOUT", "TRUSTED_PROXIES", "NGINX_WORKERS", "LISTEN_ADDRESS")


@dataclass
class Contender:
    """One server under test: its command, and how to tell that it is ready."""

    name: str
    title: str
    command: list[str]
    cwd: Path
    env: dict
    readiness: str  # "health": GET /health is 200; "predict": POST /predict is 200
    config: str  # the settings, for the report
    scratch: Path | None = None

    def is_ready(self, url: str, probe_image: Path) -> bool:
        try:
            if self.readiness == "health":
                request = urllib.request.Request(f"{url}/health")
            else:
                body, content_type = form_body([(probe_image.name, probe_image.read_bytes())])
                request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": content_type})
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status == 200
        except (OSError, urllib.error.HTTPError):
            return False


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _OUR_SETTINGS}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def ours(port: int, model: Path) -> Contender:
    """Our service exactly as the platform starts it: the Procfile's web command (nginx in front)."""
    return Contender(
        name="ours",
        title="ours (Procfile, behind nginx)",
        command=["sh", "-c", f"exec {procfile_command()}"],
        cwd=ROOT,
        # The ONNX copy beside the model, where `make variants` puts it (model.onnx for model.zip).
        env=clean_env(PORT=str(port), LISTEN_ADDRESS="127.0.0.1", MODEL_PATH=str(model),
                      ONNX_MODEL_PATH=str(model.with_suffix(".onnx")), **NO_CLIENT_LIMITS),
        readiness="health",
        config="the Procfile's `web` command: nginx on PORT, gunicorn.conf.py defaults behind it (engine: auto); "
               "per-client limits off",
    )


def ours_direct(port: int, model: Path) -> Contender:
    """Before the front: the same gunicorn, serving clients on its own port with no nginx."""
    return Contender(
        name="ours-direct",
        title="ours, gunicorn direct (no nginx)",
        command=[str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "app:create_app()"],
        cwd=ROOT,
        env=clean_env(PORT=str(port), MODEL_PATH=str(model), ONNX_MODEL_PATH=str(model.with_suffix(".onnx"))),
        readiness="health",
        config="`gunicorn --config gunicorn.conf.py` on PORT, no nginx (as the Procfile was before the front)",
    )


def ours_torchscript(port: int, model: Path) -> Contender:
    """Our service on the engine LitServe and the reference app use: servers compared alike."""
    contender = ours(port, model)
    contender.env["INFERENCE_ENGINE"] = "torchscript"
    contender.name, contender.title = "ours-torchscript", "ours, TorchScript engine"
    contender.config = "the Procfile's `web` command, INFERENCE_ENGINE=torchscript"
    return contender


def ours_at(revision: str):
    """Our service as it was at ``revision`` (e.g. before a change), its Procfile, the same model.

    The tree is ``git archive``d into a scratch directory, so the working tree is not touched.
    """
    commit = subprocess.run(["git", "rev-parse", "--short", revision], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()

    def contender(port: int, model: Path) -> Contender:
        scratch = Path(tempfile.mkdtemp(prefix=f"ours-at-{commit}-")).resolve()
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        if (scratch / "bin" / "start-nginx").is_file():
            # A revision with the front: its Procfile as it stands, on loopback by LISTEN_ADDRESS.
            baseline = ours(port, model)
            baseline.command = ["sh", "-c", f"exec {procfile_command(root=scratch)}"]
            baseline.config = f"the Procfile's `web` command at commit {commit}, defaults (engine: auto)"
        else:
            # Before the front the Procfile bound gunicorn to every interface on its command
            # line, where no setting reaches: the same gunicorn and config, bound to loopback.
            baseline = ours_direct(port, model)
            baseline.config = (f"gunicorn with commit {commit}'s gunicorn.conf.py, as its Procfile ran it, "
                               "bound to loopback; defaults (engine: auto)")
        baseline.name, baseline.title, baseline.cwd, baseline.scratch = "ours-before", f"ours at {commit}", scratch, scratch
        return baseline

    return contender


def reference(port: int, model: Path, workers: int = 2) -> Contender:
    """The brief's app as written, served by plain ``gunicorn app:app``.

    It runs from a scratch directory holding only its ``app.py`` and a link to the model,
    as in the tutorial's repo, so that no gunicorn.conf.py of ours applies to it. Two
    workers: the WEB_CONCURRENCY that Heroku sets for the dyno size docs/memory.md chooses.
    It has no /health, so it is ready when its first POST /predict answers 200.
    """
    scratch = Path(tempfile.mkdtemp(prefix="reference-app-")).resolve()
    shutil.copy(ROOT / "bench" / "reference_app.py", scratch / "app.py")
    (scratch / "model.zip").symlink_to(model.resolve())
    return Contender(
        name="reference",
        title="reference app",
        command=[str(BIN / "gunicorn"), "app:app", "--bind", f"127.0.0.1:{port}"],
        cwd=scratch,
        env=clean_env(WEB_CONCURRENCY=str(workers)),
        readiness="predict",
        config=f"`gunicorn app:app`, WEB_CONCURRENCY={workers}, torch's default threads",
        scratch=scratch,
    )


def litserve(port: int, model: Path, workers: int | None = None) -> Contender:
    workers = workers or os.cpu_count() or 1
    return Contender(
        name="litserve",
        title="LitServe",
        command=[sys.executable, "-m", "bench.litserve_app", "--port", str(port), "--model", str(model),
                 "--workers", str(workers), "--threads", "1"],
        cwd=ROOT,
        env=clean_env(),
        readiness="health",
        config=f"{workers} inference workers × 1 torch thread, fast_queue, 1 API server, no batching",
    )


@dataclass
class Running:
    contender: Contender
    url: str
    process: subprocess.Popen
    cold_start_s: float
    log_path: Path
    memory: "MemorySampler" = field(init=False)

    def __post_init__(self):
        self.memory = MemorySampler(self.process.pid)


@contextmanager
def serve(contender: Contender, port: int, log_path: Path, probe_image: Path, timeout: float = 180):
    """Start ``contender``; yield once it is ready, with its cold start time; then stop it."""
    log = open(log_path, "wb")
    started = time.monotonic()
    process = subprocess.Popen(
        contender.command, cwd=contender.cwd, env=contender.env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while not contender.is_ready(url, probe_image):
            if process.poll() is not None:
                raise RuntimeError(f"{contender.name} exited with {process.returncode}; see {log_path}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{contender.name} was not ready within {timeout:.0f}s; see {log_path}")
            time.sleep(0.05)
        yield Running(contender, url, process, time.monotonic() - started, log_path)
    finally:
        stop(process)
        log.close()
        if contender.scratch:
            shutil.rmtree(contender.scratch, ignore_errors=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left after a grace period."""
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    members = _group_members(group)
    os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(members, timeout=10)
    for leftover in alive:
        leftover.kill()
    if process.poll() is None:
        process.kill()
        process.wait()


def _group_members(group: int) -> list[psutil.Process]:
    members = []
    for candidate in psutil.process_iter():
        try:
            if os.getpgid(candidate.pid) == group:
                members.append(candidate)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


class MemorySampler:
    """Peak RSS and PSS summed over a server's whole process tree, sampled while it works."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.peak_rss_children = 0  # the workers alone, without the parent process
        self.peak_pss = 0
        self.processes = 0
        self.pids: set[int] = set()  # every process seen, to check that all were stopped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        rss = children_rss = pss = count = 0
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for process in tree:
            self.pids.add(process.pid)
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            if process is not self.root:
                children_rss += info.rss
            pss += getattr(info, "pss", info.rss)
            count += 1
        if rss > self.peak_rss:
            self.peak_rss, self.processes = rss, count
        self.peak_rss_children = max(self.peak_rss_children, children_rss)
        self.peak_pss = max(self.peak_pss, pss)

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)
