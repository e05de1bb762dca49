"""Where nginx's workers read the files they send: the app's directory, or a snapshot of it.

Started as root, nginx's workers run as the user nginx was built with (``nginx_user``), never
as root. Where that user cannot read the app's directory (a checkout inside a private folder, as CI's
`mktemp -d` or pytest's temporary folders are, mode 0700), the front gives the workers a
snapshot in its run directory instead: ``static/`` and the model copy, hard-linked where
the file system allows, else copied. It is taken at start; the platform restarts the front
on every release, and a model copy replaced in place by hand needs a restart there.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

SNAPSHOT = "app-files"


def nginx_user(nginx: str) -> str | None:
    """Started as root: the user nginx's workers run as (nginx -V's --user, else nobody); else None."""
    if os.geteuid() != 0:
        return None
    built = re.search(r"--user=(\S+)", subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr)
    return built.group(1) if built else "nobody"


def readable_by(user: str, paths: list[Path]) -> bool:
    """Whether ``user`` can read ``paths`` (and reach them): asked of the kernel, as that user."""
    entry = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # the child becomes the user, asks, and reports in its exit status
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            readable = all(os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)) for path in paths)
        except OSError:
            readable = False
        os._exit(0 if readable else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def hand_run_dir_to(user: str | None, run_dir: Path) -> None:
    """Started as root: nginx's workers reach the socket, temporary files and snapshot as ``user``."""
    if user:
        entry = pwd.getpwnam(user)
        os.chown(run_dir, entry.pw_uid, entry.pw_gid)


def served_paths(app_root: Path, device_model: str) -> list[Path]:
    """What nginx sends from the app's directory: static/ and the model copy, if it is in there."""
    paths = [app_root / "static"]
    if device_model:
        model = (app_root / device_model).resolve()
        if model.is_file() and model.is_relative_to(app_root.resolve()):
            paths.append(model)
    return paths


def files_root_for(user: str | None, app_root: Path, run_dir: Path, device_model: str) -> Path:
    """``app_root`` where nginx's workers (as ``user``) can read it, else a snapshot in ``run_dir``."""
    paths = served_paths(app_root, device_model)
    if not user or readable_by(user, paths):
        return app_root
    snapshot = run_dir / SNAPSHOT
    for path in paths:
        target = snapshot / path.resolve().relative_to(app_root.resolve())
        if path.is_dir():
            shutil.copytree(path, target, copy_function=_link_or_copy)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(path, target)
    for folder in [snapshot, *(p for p in snapshot.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)
    return snapshot


def _link_or_copy(source, target) -> None:
    # A link shares the file's mode: only one that anyone may read will do.
    if os.stat(source).st_mode & 0o004:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed
            pass
    shutil.copyfile(source, target)
    os.chmod(target, 0o644)
