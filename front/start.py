"""``bin/start-nginx <app command>``: the app on a unix socket, nginx on $PORT in front of it.

The conventions of Heroku's nginx buildpack, for one process on a dyno:

1. A private run directory per start (several servers run side by side on one machine):
   the app's socket, the ready file, nginx's configuration, pid file and temporary files.
2. The app command runs with ``APP_SOCKET`` (gunicorn.conf.py binds it) and
   ``APP_READY_FILE`` (front/ready.py writes it once every worker has warmed up the model).
3. Once the file exists, the nginx configuration is rendered from the environment
   (front/config.py) and nginx starts on ``$PORT``: the dyno takes traffic only when ready.
4. When either process exits, the other is stopped and so is this one, with a non-zero
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

from .config import ROOT, FrontSettingError, FrontSettings, RunPaths, nginx_user_when_root, open_files, render
from .files import files_root_for, hand_run_dir_to
from web.settings import read_settings

# Debian and Ubuntu install nginx in /usr/sbin, which a non-root PATH often lacks; on Heroku
# the apt buildpack (Aptfile) unpacks it into the slug's .apt/.
NGINX_PLACES = ("/usr/sbin/nginx", str(ROOT / ".apt" / "usr" / "sbin" / "nginx"), "/usr/local/sbin/nginx")
STOP_TIMEOUT_S = 30


def say(message: str) -> None:
    print(f"front: {message}", file=sys.stderr, flush=True)


def find_nginx() -> str:
    found = read_settings()["NGINX_BINARY"] or shutil.which("nginx")
    found = found or next((place for place in NGINX_PLACES if os.access(place, os.X_OK)), None)
    if not found:
        raise FrontSettingError(
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


class Front:
    """The two processes of one start, and how they are stopped together."""

    def __init__(self, app_command: list[str], settings: FrontSettings, nginx: str):
        self.app_command, self.settings, self.nginx_binary = app_command, settings, nginx
        self.paths = RunPaths(Path(tempfile.mkdtemp(prefix="front-")))
        self.app: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.stopping = False

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self._stop_all()
            shutil.rmtree(self.paths.run_dir, ignore_errors=True)

    def _run(self) -> int:
        nginx_user = nginx_user_when_root(ROOT)
        hand_run_dir_to(nginx_user, self.paths.run_dir)
        files_root = files_root_for(nginx_user, ROOT, self.paths.run_dir)
        if files_root != ROOT:
            say(f"nginx's workers ({nginx_user.split()[0]}) cannot read {ROOT}: they send a snapshot of its files")
        # Rendered first, so that a setting nginx refuses stops the start before the app loads.
        self.paths.nginx_conf.write_text(render(self.settings, self.paths, ROOT, nginx_user, files_root))
        self._check_nginx_config()
        env = {**os.environ, "APP_SOCKET": str(self.paths.app_socket), "APP_READY_FILE": str(self.paths.ready_file)}
        self.app = subprocess.Popen(self.app_command, env=env)
        say(f"started the app (pid {self.app.pid}) on {self.paths.app_socket}; nginx starts once it is ready")
        if not self._wait_until_ready():
            return self._exit_status(self.app, "the app")
        self.nginx = subprocess.Popen(self._nginx_command(), stdin=subprocess.DEVNULL)
        say(f"nginx (pid {self.nginx.pid}) serves http://{self.settings.listen_address}:{self.settings.port}")
        return self._watch()

    def _nginx_command(self, *options: str) -> list[str]:
        run_dir, conf = str(self.paths.run_dir), str(self.paths.nginx_conf)
        return [self.nginx_binary, "-p", run_dir, "-c", conf, "-e", "stderr", *options]

    def _check_nginx_config(self) -> None:
        check = subprocess.run(self._nginx_command("-t", "-q"), capture_output=True, text=True)
        if check.returncode != 0:
            raise FrontSettingError(f"nginx refuses the configuration it was given:\n{check.stderr.strip()}")

    def _wait_until_ready(self) -> bool:
        while not self.stopping:
            if self.app.poll() is not None:
                return False
            if self.paths.ready_file.exists():
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
        print("usage: bin/start-nginx <app command>, e.g. bin/start-nginx gunicorn --config gunicorn.conf.py app:app",
              file=sys.stderr)
        return 2
    try:
        settings = FrontSettings.from_env()
        nginx = find_nginx()
    except FrontSettingError as error:
        say(str(error))
        return 2
    raise_open_file_limit()
    append_to_log_files()
    front = Front(argv, settings, nginx)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, front.on_signal)
    try:
        return front.run()
    except FrontSettingError as error:
        say(str(error))
        return 2
