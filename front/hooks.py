"""gunicorn's side of the front: when the app is ready for nginx, and when it may stop.

**Ready.** ``bin/start-nginx`` sets ``APP_READY_FILE`` and starts nginx, which opens
``$PORT``, only once that file exists: until then the platform's router finds nothing
listening and sends no traffic. Each worker runs ``post_worker_init`` after it loaded the app
(the model loaded and warmed up), leaves a mark, and the one that completes the set writes
the file.

**Stop.** Heroku stops a dyno by sending SIGTERM to every process in it at once. gunicorn
would take it as its graceful stop and close its socket while nginx still has requests to
hand it (an upload still arriving), which nginx would answer 502. So under the front,
gunicorn's master takes SIGTERM only from the front, which sends it once nginx has drained,
and each worker only from the master (its graceful stop, or a reload on SIGHUP); a SIGTERM
from anyone else is noted and waits for that one. Started without the front, or once the
front is gone, gunicorn takes every SIGTERM as usual. The whole order on a stop:
docs/operations.md, "Stopping without losing a request".

A worker that is still loading when the stop comes has not started to listen yet, and a
second SIGTERM pending beside a first is merged into it, keeping the first one's sender: the
master's could be lost behind the platform's. So the front also leaves a mark (``stop_mark``)
before it signals gunicorn, and a process that finds it stops as its parent's SIGTERM would.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Callable

from web.settings import read_runtime

# How often a process waiting for its parent's SIGTERM looks for the front's stop mark.
MARK_CHECK_S = 0.2


def stop_mark(ready_file: str | Path) -> Path:
    """What the front writes just before it signals gunicorn to stop."""
    return Path(f"{ready_file}.stopping")


def when_ready(server) -> None:
    """In gunicorn's master, before it forks a worker: SIGTERM from the front only."""
    ready_file = read_runtime().ready_file
    if ready_file:
        take_sigterm_from_parent_only(lambda: server.signal(signal.SIGTERM, None), server.log,
                                      stop_mark(ready_file))


def post_worker_init(worker) -> None:
    """In each worker, once it has loaded the app: the ready mark, and SIGTERM from the master only."""
    ready_file = read_runtime().ready_file
    if not ready_file:
        return  # gunicorn started without the front (bench's direct contender, by hand)
    take_sigterm_from_parent_only(lambda: stop_worker(worker), worker.log, stop_mark(ready_file))
    marks = Path(f"{ready_file}.workers")
    marks.mkdir(exist_ok=True)
    (marks / str(os.getpid())).touch()
    if len(list(marks.iterdir())) >= worker.cfg.workers:
        # Write then rename, so that the front never sees half a file.
        partial = Path(f"{ready_file}.{os.getpid()}")
        partial.write_text(f"{worker.cfg.workers} workers ready\n")
        partial.replace(ready_file)


def stop_worker(worker) -> None:
    """What gunicorn's own SIGTERM handler does in a worker (finish the request in hand, then
    exit), and a byte on its pipe to wake it, as gunicorn's reloader does."""
    worker.handle_exit(signal.SIGTERM, None)
    os.write(worker.PIPE[1], b"1")


def take_sigterm_from_parent_only(stop: Callable[[], None], log: logging.Logger, mark: Path) -> None:
    """Call ``stop`` on a SIGTERM from this process's parent, on any once the parent is gone,
    or once the front's stop ``mark`` exists.

    Python's signal handlers are not told who sent a signal; ``sigwaitinfo`` is. So SIGTERM
    is blocked in this thread, and so in every thread and child process made after it (the
    master blocks it before it forks a worker), and one thread waits for it.
    """
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        while True:
            received = signal.sigtimedwait({signal.SIGTERM}, MARK_CHECK_S)  # None: none came
            if mark.exists() or (received and (received.si_pid == parent or os.getppid() != parent)):
                stop()
                return
            if received:
                log.info("SIGTERM from pid %s waits: process %s stops this one once nginx has drained",
                         received.si_pid, parent)

    threading.Thread(target=wait, name="sigterm-from-parent", daemon=True).start()
