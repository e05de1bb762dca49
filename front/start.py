"""``bin/start-nginx <app command>``: the app on a unix socket, nginx on $PORT in front of it.

The conventions of Heroku's nginx buildpack, for one process on a dyno:

1. A private run directory per start (several servers run side by side on one machine):
   the app's socket, the ready file, the workers' metrics files, nginx's configuration,
   pid file and temporary files; removed at exit.
2. The settings are read (web/settings.py) and config/nginx.conf.template is filled in with
   them (front/config.py) and checked by nginx: a bad value stops the start with the reason
   before the app loads.
3. The app command runs with ``APP_SOCKET`` (gunicorn.conf.py binds it), ``APP_READY_FILE``
   (front/hooks.py writes it once every worker has warmed up the model) and
   ``PROMETHEUS_MULTIPROC_DIR`` (web/telemetry.py adds up the workers' numbers there).
4. Once the file exists, nginx starts on ``$PORT``: the dyno takes traffic only when ready.
5. When either process exits, the other is stopped and so is this one, with a non-zero
   status: the platform restarts a dyno that lost half of itself.
6. SIGTERM (or SIGINT) stops both without losing a request, whether it was sent to this
   process alone (``docker stop``, Kubernetes) or to every process at once (Heroku): $PORT
   closed without dropping a connection (front/port.py), then nginx's graceful stop (it
   finishes every request it has, uploads still arriving included, with gunicorn answering
   them), then gunicorn's (its workers write their queued records); then it exits 0. nginx
   ignores a SIGTERM of its own (front/nginx_ignores_sigterm.c), and gunicorn waits for this
   process's (front/hooks.py). docs/operations.md, "Stopping without losing a request".
"""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from web.settings import SettingError, read_settings

from .config import ROOT, CannotStart, open_files, render
from .files import files_root_for, hand_run_dir_to, nginx_user
from .hooks import stop_mark
from .port import close_port, open_port

# Debian and Ubuntu install nginx in /usr/sbin, which a non-root PATH often lacks; on Heroku
# the apt buildpack (Aptfile) unpacks it into the slug's .apt/.
NGINX_PLACES = ("/usr/sbin/nginx", str(ROOT / ".apt" / "usr" / "sbin" / "nginx"), "/usr/local/sbin/nginx")
# Built from front/nginx_ignores_sigterm.c by bin/post_compile; preloaded into nginx.
IGNORE_SIGTERM = ROOT / "front" / "nginx_ignores_sigterm.so"
# Heroku kills a dyno 30 s after its SIGTERM. nginx gives its clients 15 s to finish
# (worker_shutdown_timeout in the template), and gunicorn has nothing left in hand then:
# whatever still runs at this deadline is stopped outright.
STOP_TIMEOUT_S = 25


def say(message: str) -> None:
    print(f"front: {message}", file=sys.stderr, flush=True)


def find_nginx(settings: dict) -> str:
    """NGINX_BINARY, else the nginx on PATH, else one where Debian or the apt buildpack put it."""
    found = settings["NGINX_BINARY"] or shutil.which("nginx")
    found = found or next((place for place in NGINX_PLACES if os.access(place, os.X_OK)), None)
    if not found:
        raise CannotStart(
            "nginx is not installed: apt-get install nginx (make run does), or set NGINX_BINARY to its path"
        )
    return found


def append_to_log_files() -> None:
    """Where stdout or stderr is a file, make every writer append to it.

    nginx opens /dev/stdout for its access log afresh, appending; gunicorn writes through the
    descriptor it inherited, at its own offset, and would write over nginx's lines.
    """
    for descriptor in (1, 2):
        try:
            if stat.S_ISREG(os.fstat(descriptor).st_mode):
                fcntl.fcntl(descriptor, fcntl.F_SETFL, fcntl.fcntl(descriptor, fcntl.F_GETFL) | os.O_APPEND)
        except OSError:
            pass


def raise_open_file_limit() -> None:
    """Enough file descriptors for nginx's connections, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < open_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files(), hard))


def metrics_directory(configured: str, run_dir: Path) -> Path:
    """PROMETHEUS_MULTIPROC_DIR, else one in the run directory; emptied of an earlier run's counts."""
    directory = Path(configured) if configured else run_dir / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # a previous server's counts would add to this one's
        stale.unlink()
    return directory


def nginx_environment(port: socket.socket | None = None) -> dict:
    """nginx's environment: NGINX names the port it inherits (nginx reads the variable as the
    sockets an older nginx hands it), and nginx ignores SIGTERM where the library is built."""
    environment = {name: value for name, value in os.environ.items() if name != "NGINX"}
    if port is not None:
        environment["NGINX"] = f"{port.fileno()};"
    if IGNORE_SIGTERM.exists():
        preloaded = (str(IGNORE_SIGTERM), environment.get("LD_PRELOAD"))
        environment["LD_PRELOAD"] = " ".join(filter(None, preloaded))
    return environment


class Front:
    """The two processes of one start, and how they are stopped together."""

    def __init__(self, app_command: list[str], settings: dict, nginx: str, app_root: Path = ROOT):
        self.app_command, self.settings, self.app_root = app_command, settings, app_root
        self.nginx_binary = nginx
        self.run_dir = Path(tempfile.mkdtemp(prefix="front-"))
        self.ready_file = self.run_dir / "app-ready"
        self.app: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.port: socket.socket | None = None
        self.stopping = False

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self._stop_all()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def prepare(self) -> None:
        """The run directory for nginx's workers, and nginx's configuration in it, checked by nginx."""
        user = nginx_user(self.nginx_binary)
        hand_run_dir_to(user, self.run_dir)
        files_root = files_root_for(user, self.app_root, self.run_dir, self.settings["DEVICE_MODEL_PATH"])
        if files_root != self.app_root:
            say(f"nginx's workers ({user}) cannot read {self.app_root}: they send a snapshot of its files")
        conf = render(self.settings, self.run_dir, files_root, self.app_root)
        (self.run_dir / "nginx.conf").write_text(conf)
        check = subprocess.run(self.nginx_command("-t", "-q"), capture_output=True, text=True,
                               env=nginx_environment())
        if check.returncode != 0:
            raise CannotStart(f"nginx refuses the configuration it was given:\n{check.stderr.strip()}")

    def nginx_command(self, *options: str) -> list[str]:
        conf = str(self.run_dir / "nginx.conf")
        return [self.nginx_binary, "-p", str(self.run_dir), "-c", conf, "-e", "stderr", *options]

    def _run(self) -> int:
        # First, so that a setting nginx refuses stops the start before the app loads.
        self.prepare()
        app_socket = self.run_dir / "app.sock"
        metrics = metrics_directory(self.settings["PROMETHEUS_MULTIPROC_DIR"], self.run_dir)
        env = {**os.environ, "APP_SOCKET": str(app_socket), "APP_READY_FILE": str(self.ready_file),
               "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.app = subprocess.Popen(self.app_command, env=env)
        say(f"started the app (pid {self.app.pid}) on {app_socket}; nginx starts once it is ready")
        if not self._wait_until_ready():
            return self._exit_status(self.app, "the app")
        address, port = self.settings["LISTEN_ADDRESS"], self.settings["PORT"]
        try:
            self.port = open_port(address, port)
        except OSError as error:
            raise CannotStart(f"cannot listen on {address}:{port}: {error.strerror}") from None
        self.nginx = subprocess.Popen(self.nginx_command(), stdin=subprocess.DEVNULL,
                                      pass_fds=(self.port.fileno(),), env=nginx_environment(self.port))
        say(f"nginx (pid {self.nginx.pid}) serves http://{address}:{port}")
        return self._watch()

    def _wait_until_ready(self) -> bool:
        while not self.stopping:
            if self.app.poll() is not None:
                return False
            if self.ready_file.exists():
                return True
            time.sleep(0.05)
        return False

    def _watch(self) -> int:
        """Wait until either process exits; its exit ends the other."""
        names = {self.app.pid: (self.app, "the app"), self.nginx.pid: (self.nginx, "nginx")}
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                return 1
            if pid in names:
                process, name = names[pid]
                process.returncode = os.waitstatus_to_exitcode(status)
                return self._exit_status(process, name)

    def _exit_status(self, process: subprocess.Popen, name: str) -> int:
        if self.stopping:
            return 0
        say(f"{name} exited with status {process.returncode}; stopping the other")
        # Killed by a signal: the shell's convention, 128 + its number.
        return 128 - process.returncode if process.returncode < 0 else process.returncode or 1

    def on_signal(self, number, frame) -> None:
        """SIGTERM or SIGINT: $PORT closed and nginx's graceful stop now; gunicorn's once nginx
        has exited (_watch returns, then _stop_all)."""
        if self.stopping:
            return
        self.stopping = True
        if self.nginx is not None:
            self._close_port()
            send(self.nginx, signal.SIGQUIT)
        else:  # the app is still loading: nothing reaches it yet
            stop_mark(self.ready_file).touch()
            send(self.app, signal.SIGTERM)

    def _close_port(self) -> None:
        if self.port is not None:
            port, self.port = self.port, None
            close_port(port)

    def _stop_all(self) -> None:
        """$PORT, nginx gracefully and then gunicorn, in the time a platform allows; then outright."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        self._close_port()
        # SIGINT: nginx's fast stop, for a graceful one that has not ended by the deadline.
        stop(self.nginx, signal.SIGQUIT, signal.SIGINT, deadline)
        stop_mark(self.ready_file).touch()  # for a worker that was loading at the signal (front/hooks.py)
        stop(self.app, signal.SIGTERM, signal.SIGKILL, deadline)


def stop(process: subprocess.Popen | None, graceful: int, fast: int, deadline: float) -> None:
    """``graceful``; ``fast`` if it still runs at ``deadline``; SIGKILL 2 s later; until it has exited."""
    if process is None or process.returncode is not None:
        return
    for number in (graceful, fast, signal.SIGKILL):
        send(process, number)
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
            return
        except subprocess.TimeoutExpired:
            deadline = time.monotonic() + 2
    process.wait()


def send(process: subprocess.Popen, number: int) -> None:
    """Signal ``process`` unless it has been reaped.

    Not Popen.send_signal: from a signal handler, its poll could reap a process that has
    just exited, under the os.wait of _watch, which would then never hear of it.
    """
    if process.returncode is None:
        try:
            os.kill(process.pid, number)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: bin/start-nginx <app command>, e.g. bin/start-nginx gunicorn --config gunicorn.conf.py 'app:create_app()'",
              file=sys.stderr)
        return 2
    try:
        settings = read_settings()
        nginx = find_nginx(settings)
    except (SettingError, CannotStart) as error:
        say(str(error))
        return 2
    raise_open_file_limit()
    append_to_log_files()
    if not IGNORE_SIGTERM.exists():
        say(f"{IGNORE_SIGTERM.name} is not built (bin/post_compile builds it): a SIGTERM sent to nginx "
            "itself, as Heroku sends one to every process of a dyno, drops the requests it has in hand")
    front = Front(argv, settings, nginx)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, front.on_signal)
    try:
        return front.run()
    except CannotStart as error:
        say(str(error))
        return 2
