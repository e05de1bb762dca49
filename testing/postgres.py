"""A real PostgreSQL server for tests: Debian's binaries, a fresh cluster in a temporary folder.

The server listens only on a unix socket in that folder, so it needs no port and collides
with nothing. initdb and postgres refuse to run as root (CI and this machine run as root):
then they run as the ``postgres`` system user (or ``nobody``) via ``runuser``, and the
folder is theirs. ``make test`` installs the binaries (apt-get install postgresql).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg


def postgres_bin() -> Path:
    """Where initdb and pg_ctl are: POSTGRES_BIN, else the newest /usr/lib/postgresql/*/bin."""
    configured = os.environ.get("POSTGRES_BIN")
    candidates = [configured] if configured else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name)
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "No PostgreSQL server binaries (initdb, pg_ctl): `make test` installs them "
        "(apt-get install postgresql), or set POSTGRES_BIN to their folder."
    )


def _server_user() -> str | None:
    """The unprivileged user to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("Running as root with neither a 'postgres' nor a 'nobody' user to run PostgreSQL as.")


class PostgresServer:
    """One throw-away cluster; ``new_database()`` gives each test a database of its own."""

    def __init__(self, durable: bool = False):
        self.durable = durable  # fsync on, as in production (the benchmark); off for tests
        self.bin = postgres_bin()
        self.user = _server_user()
        # Not pytest's tmp_path: its parents are private to root, and the server user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "server.log"
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "--username=postgres",
                  "--encoding=UTF8", "--no-sync", "--no-instructions")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120, check=check)

    def start(self) -> None:
        # No TCP (listen_addresses empty), the socket in our folder, durability off: a test
        # database needs none, and fsyncs would only slow the tests.
        options = f"-c listen_addresses='' -k {self.socket_dir}"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        result = self._run("pg_ctl", "start", "-D", str(self.data), "-w", "-t", "60",
                           "-l", str(self.log), "-o", options, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{self.log_text()}")

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", check=False)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def admin_connection(self) -> psycopg.Connection:
        return psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres", autocommit=True)

    def new_database(self) -> str:
        """A new, empty database; its URL, in the form DATABASE_URL takes."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with self.admin_connection() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, name: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://postgres@/{name}?host={self.socket_dir}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
