"""``bin/start-nginx <app command>``: the app on a unix socket, nginx on $PORT in front of it.

The conventions of Heroku's nginx buildpack, for one process on a dyno:

1. A private run directory per start (several servers run side by side on one machine):
   the app's socket, the ready file, the workers' metrics files, nginx's configuration,
   pid file and temporary files; removed at exit.
2. The settings are read (web/settings.py) and config/nginx.conf.template is filled in with
   them (front/config.py) and checked by nginx: a bad value stops the start with the reason
   before the app loads.
3. The app command runs with ``APP_SOCKET`` (gunicorn.conf.py binds it), ``APP_READY_FILE``
   (front/ready.py writes it once every worker has warmed up the model) and
   ``PROMETHEUS_MULTIPROC_DIR`` (web/telemetry.py adds up the workers' numbers there).
4. Once the file exists, nginx starts on ``$PORT``: the dyno takes traffic only when ready.
5. When either process exits, the other is stopped and so is this one, with a non-zero
   status: the platform restarts a dyno that lost half of itself. SIGTERM or SIGINT stops
   both (gunicorn gracefully) and exits 0.
"""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from web.settings import SettingError, read_settings

from .config import ROOT, CannotStart, open_files, render
from .files import files_root_for, hand_run_dir_to, nginx_user

# Debian and Ubuntu install nginx in /usr/sbin, which a non-root PATH often lacks; on Heroku
# the apt buildpack (Aptfile) unpacks it into the slug's .apt/.
NGINX_PLACES = ("/usr/sbin/nginx", str(ROOT / ".apt" / "usr" / "sbin" / "nginx"), "/usr/local/sbin/nginx")
STOP_TIMEOUT_S = 30


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


def nginx_environment() -> dict:
    """The environment without NGINX: nginx reads that as sockets an older nginx handed it."""
    return {name: value for name, value in os.environ.items() if name != "NGINX"}


class Front:
    """The two processes of one start, and how they are stopped together."""

    def __init__(self, app_command: list[str], settings: dict, nginx: str, app_root: Path = ROOT):
        self.app_command, self.settings, self.app_root = app_command, settings, app_root
        self.nginx_binary = nginx
        self.run_dir = Path(tempfile.mkdtemp(prefix="front-"))
        self.ready_file = self.run_dir / "app-ready"
        self.app: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
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
        self.nginx = subprocess.Popen(self.nginx_command(), stdin=subprocess.DEVNULL, env=nginx_environment())
        address, port = self.settings["LISTEN_ADDRESS"], self.settings["PORT"]
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
        self.stopping = True
        self._signal_all()

    def _signal_all(self) -> None:
        # SIGTERM: gunicorn finishes the requests in hand; SIGQUIT: nginx finishes its own.
        for process, sig in ((self.nginx, signal.SIGQUIT), (self.app, signal.SIGTERM)):
            if process is not None and process.returncode is None:
                try:
                    process.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _stop_all(self) -> None:
        self._signal_all()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in (self.nginx, self.app):
            if process is None or process.returncode is not None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
    front = Front(argv, settings, nginx)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, front.on_signal)
    try:
        return front.run()
    except CannotStart as error:
        say(str(error))
        return 2
