"""Serve a new model file without downtime: check a copy, swap it in atomically, reload gunicorn.

gunicorn's own graceful reload does the serving side. On SIGHUP its master starts new
workers, which load MODEL_PATH after they fork (nothing is preloaded), and stops the old
ones with SIGTERM, which finish the request in hand first; connections that arrive
meanwhile wait in the listening socket's backlog until a new worker accepts them.

What gunicorn does not do is protect us from a bad file: a new worker that fails to boot
makes the master halt the whole server (exit code 3, "Worker failed to boot"). So the file
is checked *before* it takes MODEL_PATH's place, by the very check a worker runs with the
server's settings (``Classifier.setup``: with ``INFERENCE_ENGINE=onnxruntime`` a model that
its ONNX copy was not made from is refused, as a worker would refuse it), and it takes it with one rename, so a
worker that starts at any moment (a reload, a recycled or crashed worker) reads either the
old file or the new one, whole, and never a half-copied one.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import shutil
from pathlib import Path

from .errors import ModelContractError
from .pipeline import Classifier


def check_model_file(path: str | Path, **serving) -> Classifier:
    """Everything a worker checks when it loads ``path``; raises ``ModelContractError``.

    ``serving`` are the server's settings, as ``Classifier.setup`` takes them (engine,
    ONNX copy, ...); without them, the TorchScript path's checks alone.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelContractError(f"Model file not found: {path}")
    return Classifier.setup(path, **serving)


def install_model(candidate: str | Path, served: str | Path, **serving) -> Classifier:
    """Check ``candidate`` and put it in place of ``served`` with one atomic rename.

    A copy next to ``served`` is what gets checked and renamed: the bytes checked are the
    bytes served, even if ``candidate`` changes meanwhile, and the rename stays on one file
    system. On any failure ``served`` is left as it was. ``serving`` as for
    ``check_model_file``; the classifier that passed the check is returned.
    """
    candidate, served = Path(candidate), Path(served)
    if not candidate.is_file():
        raise ModelContractError(f"Model file not found: {candidate}")
    staged = served.with_name(f".{served.name}.{os.getpid()}.incoming")
    try:
        shutil.copyfile(candidate, staged)
        _flush_to_disk(staged)
        try:
            classifier = check_model_file(staged, **serving)
        except ModelContractError as error:  # name the file the caller gave, not the copy
            raise ModelContractError(str(error).replace(str(staged), str(candidate))) from error
        os.replace(staged, served)
        _flush_to_disk(served.parent)
    finally:
        staged.unlink(missing_ok=True)
    classifier.model = dataclasses.replace(classifier.model, path=str(served))
    return classifier


def gunicorn_master_pid(pid: int | None = None, pidfile: str | Path | None = None) -> int:
    """The master's process id, from ``pid`` or gunicorn's ``--pid`` file, checked to be gunicorn.

    A stale pid file could name an unrelated process by now, and SIGHUP ends most processes.
    """
    if (pid is None) == (pidfile is None):
        raise ValueError("Give the gunicorn master's pid or its pid file, not both.")
    if pidfile is not None:
        try:
            pid = int(Path(pidfile).read_text().strip())
        except (OSError, ValueError) as exc:
            raise LookupError(f"Cannot read a process id from {pidfile}: {exc}") from exc
    command_line = Path(f"/proc/{pid}/cmdline")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise LookupError(f"No process {pid} is running.") from None
    if command_line.exists() and b"gunicorn" not in command_line.read_bytes():
        raise LookupError(f"Process {pid} is not gunicorn; it was not signalled.")
    return pid


def reload_workers(master_pid: int) -> None:
    """Ask gunicorn to replace its workers gracefully: they load MODEL_PATH afresh."""
    os.kill(master_pid, signal.SIGHUP)


def _flush_to_disk(path: Path) -> None:
    # A rename is atomic for processes, but only durable across a power cut once the
    # file's data and then the directory entry have reached the disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
