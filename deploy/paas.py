#!/usr/bin/env python3
"""A git-push platform on one machine: what a Heroku-style platform does on ``git push``.

    python3 deploy/paas.py init DIR            # DIR/app.git is the git remote to push to
    python3 deploy/paas.py config DIR K=V ...  # config vars, like `heroku config:set`
    git push DIR/app.git HEAD:main             # the post-receive hook builds and releases
    python3 deploy/paas.py status DIR          # the live release: the app's URL, build time, slug size
    python3 deploy/paas.py stop DIR            # stop the router and every web process this platform started

On each push to ``main`` the hook builds a release from the pushed commit: the tree minus
``.slugignore``, a fresh virtualenv from ``requirements.txt`` on the Python that
``runtime.txt`` names, then ``bin/post_compile`` if the app has one (as Heroku's Python
buildpack runs it); it measures the slug (refusing one over the platform's limit), starts
the Procfile's ``web`` process with ``PORT`` set and waits for the health check from
``app.json``. Only then does the router (nginx, in front of the live release at the app's
one address, as Heroku's router is) switch to it, and the previous release is stopped as a
dyno is: SIGTERM to every process of it, SIGKILL 30 s later. That is Heroku's preboot: no
request fails across a release. A release that fails to build or boot is discarded and the
previous one keeps serving.

Standard library only: this is the platform, not the app, and it runs on any python3.
The web process serves loopback only (``LISTEN_ADDRESS=127.0.0.1``), as a test machine must.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEPLOYED_BRANCHES = ("refs/heads/main", "refs/heads/master")
# Heroku refuses a compiled slug over 500 MB (its size as a tar.gz).
DEFAULT_SLUG_LIMIT_MB = 500
# Heroku gives a web dyno 60 s to bind; loading torch on a busy shared machine can take longer.
DEFAULT_BOOT_TIMEOUT_S = 120
# Where no registry mirror is reachable, fail over at once rather than retry for minutes.
DEFAULT_PIP_RETRIES = "0"
STOP_TIMEOUT_S = 30
MEGABYTE = 1024 * 1024
ROUTER_TEMPLATE = Path(__file__).resolve().with_name("router.conf.template")
# A reload lets the router's previous workers finish their requests (worker_shutdown_timeout).
ROUTER_SWITCH_TIMEOUT_S = 60


class DeployError(Exception):
    """A build or release step failed; the message says why and what to do."""


# ---------------------------------------------------------------------------------------
# The platform's folders

class Platform:
    """The folders of one app: the bare repo, releases, logs, build cache, config vars."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.repo = self.root / "app.git"
        self.releases = self.root / "releases"
        self.logs = self.root / "logs"
        self.cache = self.root / "cache"
        self.config_file = self.root / "config.json"
        self.current_file = self.root / "current.json"
        self.router = self.root / "router"
        self.router_file = self.root / "router.json"

    def config_vars(self) -> dict:
        return _read_json(self.config_file, {})

    def current(self) -> dict | None:
        return _read_json(self.current_file, None)

    def release_records(self) -> list[dict]:
        records = [_read_json(path, None) for path in sorted(self.releases.glob("v*.json"))]
        return sorted((r for r in records if r), key=lambda record: record["number"])

    def next_number(self) -> int:
        return max((record["number"] for record in self.release_records()), default=0) + 1

    def router_state(self) -> dict:
        """The router's port (chosen at init: the app's address) and its process, once started."""
        return _read_json(self.router_file, {})

    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.router_state()['port']}"


def init(root: Path) -> Platform:
    """Create the bare repository and install the hook that deploys each push."""
    platform = Platform(root)
    for folder in (platform.releases, platform.logs, platform.cache):
        folder.mkdir(parents=True, exist_ok=True)
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(platform.repo))
    # An absolute hooks path: a core.hooksPath set in a user's global config would
    # otherwise send git looking for the hook elsewhere.
    _git("--git-dir", str(platform.repo), "config", "core.hooksPath", str(platform.repo / "hooks"))
    # CI checks out shallow clones; let them push.
    _git("--git-dir", str(platform.repo), "config", "receive.shallowUpdate", "true")
    hook = platform.repo / "hooks" / "post-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "# Deploy every push to main: build, start, health-check, release (see paas.py).\n"
        f'exec "{sys.executable}" "{Path(__file__).resolve()}" receive "{platform.root}"\n'
    )
    hook.chmod(0o755)
    if not platform.config_file.exists():
        _write_json(platform.config_file, {})
    if not platform.router_file.exists():
        _write_json(platform.router_file, {"port": free_port()})
    return platform


# ---------------------------------------------------------------------------------------
# The post-receive hook

def receive(platform: Platform, ref_lines) -> int:
    """Deploy the last pushed commit of the main branch; git shows our output to the pusher."""
    commit = None
    for line in ref_lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        _, new, ref = parts
        if ref in DEPLOYED_BRANCHES and set(new) != {"0"}:
            commit = new
        else:
            say(f"Push to {ref} received; only main (or master) deploys.")
    if commit is None:
        return 0
    with open(platform.root / "deploy.lock", "w") as lock:
        # One deploy at a time, as a platform queues builds of one app.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            record = deploy(platform, commit)
        except DeployError as error:
            say(f"Deploy failed: {error}", step=True)
            say("The previous release keeps serving.")
            return 1
    say(
        f"Released {record['release']} at {record['app_url']} in {record['deploy_seconds']:.0f} s "
        f"(build {record['build_seconds']:.0f} s; slug {record['slug_bytes'] / MEGABYTE:.0f} MB, "
        f"{record['slug_gzip_bytes'] / MEGABYTE:.0f} MB compressed)",
        step=True,
    )
    return 0


def deploy(platform: Platform, commit: str) -> dict:
    """Build a release from ``commit``, boot it, then switch traffic to it."""
    number = platform.next_number()
    name = f"v{number}"
    release_dir = platform.releases / name
    record = {"release": name, "number": number, "commit": commit, "status": "building"}
    started = time.monotonic()
    try:
        build(platform, commit, release_dir, record)
        record["build_seconds"] = round(time.monotonic() - started, 1)
        record.update(measure_slug(release_dir))
        check_slug_size(record, platform)
        say(
            f"Build {record['build_seconds']:.0f} s; slug {record['slug_bytes'] / MEGABYTE:.0f} MB "
            f"on disk, {record['slug_gzip_bytes'] / MEGABYTE:.0f} MB compressed "
            f"(limit {slug_limit_mb(platform)} MB)",
            step=True,
        )
        start_web(platform, release_dir, record)
    except DeployError:
        record["status"] = "failed"
        _write_json(platform.releases / f"{name}.json", record)
        stop_release(platform, record)
        shutil.rmtree(release_dir, ignore_errors=True)
        raise
    previous = platform.current()
    route_to(platform, record)
    record.update(status="live", app_url=platform.app_url())
    record["deploy_seconds"] = round(time.monotonic() - started, 1)  # push to serving
    _write_json(platform.releases / f"{name}.json", record)
    _write_json(platform.current_file, record)
    if previous:
        say(f"Stopping {previous['release']}: SIGTERM to every process, as a dyno", step=True)
        stopped = stop_release(platform, previous)
        previous.update(status="retired", **stopped)
        if stopped:
            say(f"{previous['release']} stopped after {stopped['stop_seconds']:.1f} s "
                f"({stopped['stopped_by']})")
        _write_json(platform.releases / f"{previous['release']}.json", previous)
    prune_releases(platform, keep={name, previous["release"] if previous else name})
    return record


def build(platform: Platform, commit: str, release_dir: Path, record: dict) -> None:
    say(f"Building {record['release']} from {commit[:12]}", step=True)
    release_dir.mkdir(parents=True)
    checkout(platform, commit, release_dir)
    removed = apply_slugignore(release_dir)
    if removed:
        say(f"Left out {removed} files named in .slugignore")
    version = python_version(release_dir)
    python = find_python(version)
    record["python"] = version
    say(f"Python {version} (runtime.txt): {python}", step=True)
    if not (release_dir / "requirements.txt").is_file():
        raise DeployError("No requirements.txt in the pushed commit; the Python app needs one.")
    venv = release_dir / ".venv"
    run_step([python, "-m", "venv", str(venv)], cwd=release_dir, env=build_env(platform))
    say("Installing requirements.txt into a fresh virtualenv", step=True)
    run_step(
        [
            str(venv / "bin" / "python"), "-m", "pip", "install",
            "--retries", os.environ.get("PIP_RETRIES", DEFAULT_PIP_RETRIES),
            "--disable-pip-version-check", "--progress-bar", "off",
            "-r", "requirements.txt",
        ],
        cwd=release_dir,
        env=build_env(platform),
    )
    post_compile = release_dir / "bin" / "post_compile"
    if post_compile.is_file():
        say("Running bin/post_compile", step=True)
        post_compile.chmod(post_compile.stat().st_mode | 0o111)
        env = build_env(platform)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        run_step([str(post_compile)], cwd=release_dir, env=env)
    if not web_command(release_dir):
        raise DeployError("The Procfile has no 'web:' process; nothing to serve.")


def checkout(platform: Platform, commit: str, release_dir: Path) -> None:
    """Write the commit's tree (not its history) into the release folder."""
    archive = subprocess.Popen(
        ["git", "--git-dir", str(platform.repo), "archive", "--format=tar", commit],
        stdout=subprocess.PIPE, env=_clean_git_env(),
    )
    subprocess.run(["tar", "-x", "-C", str(release_dir)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise DeployError(f"git archive {commit} failed")


def apply_slugignore(release_dir: Path) -> int:
    """Delete the files that ``.slugignore`` names, before the build, as Heroku does."""
    ignore_file = release_dir / ".slugignore"
    if not ignore_file.is_file():
        return 0
    paths = [p.relative_to(release_dir).as_posix() for p in release_dir.rglob("*") if not p.is_dir()]
    ignored = slugignored(paths, ignore_file.read_text())
    for path in ignored:
        (release_dir / path).unlink()
    for folder in sorted((p for p in release_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return len(ignored)


def slugignored(paths: list[str], patterns: str) -> list[str]:
    """The paths that ``.slugignore`` patterns match, by git's own gitignore matcher."""
    if not paths:
        return []
    with tempfile.TemporaryDirectory() as scratch:
        # An empty repository, so that only these patterns apply (no .gitignore, no excludes).
        _git("init", "--quiet", scratch)
        patterns_file = Path(scratch) / "slugignore"
        patterns_file.write_text(patterns)
        result = subprocess.run(
            ["git", "-C", scratch, "-c", f"core.excludesFile={patterns_file}",
             "check-ignore", "--no-index", "--stdin", "-z"],
            input="\0".join(paths) + "\0", capture_output=True, text=True, env=_clean_git_env(),
        )
    if result.returncode not in (0, 1):  # 1: nothing matched
        raise DeployError(f"could not read .slugignore: {result.stderr.strip()}")
    return [path for path in result.stdout.split("\0") if path]


def python_version(release_dir: Path) -> str:
    """The exact Python version from runtime.txt; .python-version, if present, must agree."""
    runtime = release_dir / "runtime.txt"
    if not runtime.is_file():
        raise DeployError("No runtime.txt; name the Python version in it, e.g. python-3.11.7.")
    match = re.fullmatch(r"python-(\d+\.\d+\.\d+)", runtime.read_text().strip())
    if not match:
        raise DeployError(
            f"runtime.txt says {runtime.read_text().strip()!r}; write python-X.Y.Z, e.g. python-3.11.7."
        )
    version = match.group(1)
    pinned = release_dir / ".python-version"
    if pinned.is_file() and pinned.read_text().strip() != version:
        raise DeployError(
            f"runtime.txt says Python {version} but .python-version says "
            f"{pinned.read_text().strip()}; make them name the same version."
        )
    return version


def find_python(version: str) -> str:
    """An interpreter of exactly ``version``: pyenv's, or python3.X / python3 on PATH."""
    major_minor = ".".join(version.split(".")[:2])
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [
        str(pyenv_root / "versions" / version / "bin" / f"python{major_minor}"),
        shutil.which(f"python{major_minor}"),
        shutil.which("python3"),
    ]
    for candidate in filter(None, candidates):
        if Path(candidate).exists() and _python_version_of(candidate) == version:
            return candidate
    raise DeployError(
        f"Python {version} (from runtime.txt) is not installed on this machine. Install it "
        f"(e.g. `pyenv install {version}`) or change runtime.txt and .python-version."
    )


def _python_version_of(python: str) -> str | None:
    try:
        result = subprocess.run(
            [python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def measure_slug(release_dir: Path) -> dict:
    """The slug's size on disk and as the tar.gz a platform stores and limits."""
    total = 0
    for folder, _, files in os.walk(release_dir):
        for file in files:
            stat = os.lstat(os.path.join(folder, file))
            total += stat.st_size
    tar = subprocess.Popen(["tar", "-czf", "-", "-C", str(release_dir), "."], stdout=subprocess.PIPE)
    compressed = 0
    while chunk := tar.stdout.read(MEGABYTE):
        compressed += len(chunk)
    if tar.wait() != 0:
        raise DeployError("could not compress the slug to measure it")
    return {"slug_bytes": total, "slug_gzip_bytes": compressed}


def slug_limit_mb(platform: Platform) -> int:
    return int(platform.config_vars().get("SLUG_LIMIT_MB", DEFAULT_SLUG_LIMIT_MB))


def check_slug_size(record: dict, platform: Platform) -> None:
    limit = slug_limit_mb(platform)
    if record["slug_gzip_bytes"] > limit * MEGABYTE:
        raise DeployError(
            f"the compressed slug is {record['slug_gzip_bytes'] / MEGABYTE:.0f} MB, over the "
            f"{limit} MB limit; leave files out with .slugignore or trim requirements.txt."
        )


# ---------------------------------------------------------------------------------------
# Starting, checking and stopping web processes

def web_command(release_dir: Path) -> str | None:
    procfile = release_dir / "Procfile"
    if not procfile.is_file():
        return None
    for line in procfile.read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "web" and command.strip():
            return command.strip()
    return None


def app_json(release_dir: Path) -> dict:
    path = release_dir / "app.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise DeployError(f"app.json is not valid JSON: {error}") from None


def health_check_path(manifest: dict) -> str:
    """The web process's startup check from app.json (Dokku's format); "/" if none."""
    checks = manifest.get("healthchecks", {}).get("web", [])
    for check in checks:
        if check.get("type", "startup") == "startup" and check.get("path"):
            return check["path"]
    return "/"


def app_json_defaults(manifest: dict) -> dict:
    """Env vars app.json gives values to, as a platform sets them when it creates the app."""
    defaults = {}
    for name, spec in manifest.get("env", {}).items():
        value = spec.get("value") if isinstance(spec, dict) else spec
        if value is not None:
            defaults[name] = str(value)
    return defaults


def start_web(platform: Platform, release_dir: Path, record: dict) -> None:
    """Start the Procfile's web process with PORT set and wait for its health check."""
    manifest = app_json(release_dir)
    command = web_command(release_dir)
    port = free_port()
    env = {
        "PATH": f"{release_dir / '.venv' / 'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(release_dir)),
        "LANG": "C.UTF-8",
        "DYNO": "web.1",
        **app_json_defaults(manifest),
        **{k: v for k, v in platform.config_vars().items() if k != "SLUG_LIMIT_MB"},
        "PORT": str(port),
        # A platform serves every interface; on one machine, and in tests, loopback only.
        # The app's front (bin/start-nginx) listens where LISTEN_ADDRESS says.
        "LISTEN_ADDRESS": "127.0.0.1",
    }
    log_path = platform.logs / f"{record['release']}-web.log"
    say(f"Starting web: {command} (PORT={port})", step=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            cwd=release_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stopping it stops its workers
        )
    url = f"http://127.0.0.1:{port}"
    record.update({"pid": process.pid, "port": port, "url": url, "log": str(log_path)})
    # Recorded before the wait, so that `stop` finds the process even if this hook dies.
    _write_json(platform.releases / f"{record['release']}.json", record)
    path = health_check_path(manifest)
    timeout = float(platform.config_vars().get("BOOT_TIMEOUT", DEFAULT_BOOT_TIMEOUT_S))
    say(f"Waiting for {path} (up to {timeout:.0f} s)", step=True)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise DeployError(
                f"the web process exited with {process.returncode} before it was healthy:\n"
                + _tail(log_path)
            )
        if _answers_200(url + path):
            record["boot_seconds"] = round(time.monotonic() - started, 1)
            say(f"{path} answered 200 after {record['boot_seconds']:.1f} s")
            return
        time.sleep(0.25)
    raise DeployError(f"{url}{path} did not answer 200 within {timeout:.0f} s:\n" + _tail(log_path))


def stop_release(platform: Platform, record: dict) -> dict:
    """Stop a release as a dyno is stopped: SIGTERM to every process of it, SIGKILL to what
    is left 30 s later. Returns how long it took and which signal ended it."""
    pid = record.get("pid")
    started = time.monotonic()
    if not pid or not _is_our_process(platform.releases, pid):
        return {}
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return {}
    deadline = started + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _group_alive(pid):
        _reap(pid)
        time.sleep(0.1)
    stopped_by = "SIGTERM"
    if _group_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        stopped_by = "SIGKILL"
    _reap(pid)
    return {"stop_seconds": round(time.monotonic() - started, 1), "stopped_by": stopped_by}


def stop_all(platform: Platform) -> None:
    stop_router(platform)
    for record in platform.release_records():
        stop_release(platform, record)
    if platform.current_file.exists():
        platform.current_file.unlink()


# ---------------------------------------------------------------------------------------
# The router: the app's one address, in front of its live release

class RouterTemplate(string.Template):
    """%{name} placeholders: $name is nginx's own variable syntax."""

    delimiter = "%"


def route_to(platform: Platform, record: dict) -> None:
    """Send the app's traffic to ``record``'s web process, and return once none goes elsewhere.

    The router is started on the first release; later ones rewrite its configuration and
    reload it (SIGHUP, nginx's graceful reload). Its workers from before the reload finish
    what they have, on the previous release, then exit: once none is left, that release
    gets no more requests and can be stopped.
    """
    router = platform.router_state()
    platform.router.mkdir(exist_ok=True)
    conf = platform.router / "nginx.conf"
    conf.write_text(RouterTemplate(ROUTER_TEMPLATE.read_text()).substitute(
        router_port=router["port"], release_port=record["port"]))
    command = [nginx_binary(), "-p", str(platform.router), "-c", str(conf), "-e", "stderr"]
    check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True)
    if check.returncode != 0:
        raise DeployError(f"the router refuses its configuration:\n{check.stderr.strip()}")
    pid = router.get("pid")
    if pid and _is_our_process(platform.router, pid):
        before = set(_child_pids(pid))
        os.kill(pid, signal.SIGHUP)

        def switched() -> bool:
            workers = set(_child_pids(pid))
            return bool(workers) and not workers & before
    else:
        with open(platform.logs / "router.log", "ab") as log:
            process = subprocess.Popen(command, cwd=platform.router, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        _write_json(platform.router_file, {**router, "pid": process.pid})

        def switched() -> bool:
            return _answers(router["port"])
    deadline = time.monotonic() + ROUTER_SWITCH_TIMEOUT_S
    while not switched():
        if time.monotonic() > deadline:
            raise DeployError(f"the router did not switch to {record['release']}:\n"
                              + _tail(platform.logs / "router.log"))
        time.sleep(0.05)
    say(f"Routing {platform.app_url()} to {record['release']}", step=True)


def stop_router(platform: Platform) -> None:
    """nginx's graceful stop (SIGQUIT) for the router, then SIGKILL after STOP_TIMEOUT_S."""
    pid = platform.router_state().get("pid")
    if pid and _is_our_process(platform.router, pid):
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and _group_alive(pid):
            _reap(pid)
            time.sleep(0.1)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)


def nginx_binary() -> str:
    """The platform's own nginx: NGINX_BINARY, else the one on PATH, else Debian's."""
    return os.environ.get("NGINX_BINARY") or shutil.which("nginx") or "/usr/sbin/nginx"


def prune_releases(platform: Platform, keep: set[str]) -> None:
    """Keep the live and the previous release's slug on disk (a rollback), delete older ones."""
    for folder in platform.releases.iterdir():
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def _is_our_process(folder: Path, pid: int) -> bool:
    # A pid may be reused after a process ends: only touch one that runs in our folder.
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc here; trust the record
    return cwd.startswith(str(folder))


def _child_pids(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    # The hook that started a process is gone by now; whoever runs `stop` may be its parent.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------
# Helpers

def say(message: str, step: bool = False) -> None:
    """Build output in Heroku's style; git prefixes it with "remote:" for the pusher."""
    prefix = "-----> " if step else "       "
    for line in message.splitlines() or [""]:
        print(prefix + line, flush=True)
        prefix = "       "


def run_step(command: list[str], cwd: Path, env: dict) -> None:
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:
        say(line.rstrip())
    if process.wait() != 0:
        raise DeployError(f"{' '.join(command[:4])} ... exited with {process.returncode}")


def build_env(platform: Platform) -> dict:
    """A clean build environment: no variables of the pusher's shell or of git's hook."""
    passed = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k.endswith("_PROXY")}
    return {
        **passed,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(platform.root)),
        "LANG": "C.UTF-8",
        # The platform's build cache: a second build reuses downloaded wheels.
        "PIP_CACHE_DIR": str(platform.cache / "pip"),
    }


def _clean_git_env() -> dict:
    # git runs hooks with GIT_DIR and friends set; they must not leak into other repos.
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def _git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, env=_clean_git_env())


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _write_json(path: Path, data) -> None:
    # Write then rename, so that a reader never sees half a file.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


# ---------------------------------------------------------------------------------------
# Command line

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("init", "create DIR/app.git and its deploy hook"),
        ("receive", "the post-receive hook (git runs it)"),
        ("status", "print the live release as JSON"),
        ("stop", "stop every web process of this platform"),
        ("config", "set config vars: KEY=VALUE (an empty VALUE unsets)"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument("root", type=Path, help="the platform's folder")
        if name == "config":
            command.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.command == "init":
        platform = init(args.root)
        print(f"git push {platform.repo} HEAD:main   # deploys to {platform.app_url()}")
        return 0
    platform = Platform(args.root)
    if args.command == "receive":
        return receive(platform, sys.stdin)
    if args.command == "status":
        print(json.dumps(platform.current(), indent=2))
        return 0 if platform.current() else 1
    if args.command == "stop":
        stop_all(platform)
        return 0
    config = platform.config_vars()
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"{pair!r} is not KEY=VALUE")
        if value:
            config[key] = value
        else:
            config.pop(key, None)
    _write_json(platform.config_file, config)
    print(json.dumps(config, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
