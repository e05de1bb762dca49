"""gunicorn's side of Prometheus multiprocess mode: one shared directory, dead workers let go.

Each worker writes its metrics to files in ``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics``
sums them, so a scrape that lands on any worker sees the whole server. The master prepares
the directory before it forks (the workers inherit the variable) and tells prometheus-client
when a worker exits. Standard library only at import: the master never loads torch or Flask.

The last three functions are gunicorn server hooks; gunicorn.conf.py names them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
_created: Path | None = None  # a directory we made, removed again when the server stops


def prepare_directory() -> Path:
    """Create the directory (a fresh temporary one unless set) and empty it of old runs' files.

    Counts from a previous server would otherwise be added to this one's.
    """
    global _created
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        directory = Path(configured)
    else:
        directory = _created = Path(tempfile.mkdtemp(prefix="prometheus-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[ENV_VAR] = str(directory)
    return directory


def remove_directory() -> None:
    """Remove the directory if it was a temporary one made by ``prepare_directory``."""
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (in-flight requests, model info); keep its counts."""
    if os.environ.get(ENV_VAR):
        from prometheus_client import multiprocess  # only now: the variable is set

        multiprocess.mark_process_dead(pid)


def on_starting(server) -> None:
    prepare_directory()


def child_exit(server, worker) -> None:
    mark_process_dead(worker.pid)


def on_exit(server) -> None:
    remove_directory()
