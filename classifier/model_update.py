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
old file or the new one, whole, and never a half-copied one. ``install_files`` does the same
for a model with its ONNX copy: the promotion of a candidate and its rollback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import shutil
from pathlib import Path

from .errors import ModelContractError
from .onnx_copy import manifest_path
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
    return install_files([candidate], [served], **serving)


def install_files(sources, targets, displaced=(), move: bool = False, **serving) -> Classifier:
    """``install_model`` for a model file with its ONNX copy and the copy's manifest (``model_files``).

    The copy checked is the one that will be served, and a target whose source is missing is
    removed (the ONNX copy of the model replaced). With ``displaced``, the files the targets held
    go there (a promotion keeps the served model for its rollback); with ``move``, the sources
    are removed (a promoted candidate). The files change in an order in which a worker starting
    at any moment finds a model it can serve and no candidate equal to it.
    """
    sources, targets, displaced = ([Path(path) for path in paths] for paths in (sources, targets, displaced))
    if not sources[0].is_file():
        raise ModelContractError(f"Model file not found: {sources[0]}")
    staged, kept = [_staging(path) for path in targets], [_staging(path) for path in displaced]
    try:
        _copy(sources, staged)
        if len(targets) > 1:
            serving = {**serving, "onnx_path": staged[1] if staged[1].is_file() else None}
        try:
            classifier = check_model_file(staged[0], **serving)
        except ModelContractError as error:  # name the files the caller gave, not the copies
            message = str(error)
            for copy, source in zip(staged, sources):
                message = message.replace(str(copy), str(source))
            raise ModelContractError(message) from error
        _copy(targets, kept)
        for source in sources if move else ():
            source.unlink(missing_ok=True)
        _rename(staged, targets)
        _rename(kept, displaced)
    finally:
        for copy in staged + kept:
            copy.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                copy.parent.rmdir()
    classifier.model = dataclasses.replace(classifier.model, path=str(targets[0]))
    return classifier


def model_files(model_path, onnx_path=None) -> list[Path]:
    """A model file, then its ONNX copy and the copy's manifest when there is a path for one."""
    return [Path(model_path), *((Path(onnx_path), manifest_path(onnx_path)) if onnx_path else ())]


def previous_files(files) -> list[Path]:
    """Where a promotion keeps the files of the model it replaced, for a rollback: NAME.previous."""
    return [path.with_name(f"{path.name}.previous") for path in files]


def _staging(target: Path) -> Path:
    # Beside the target, so that the rename stays on one file system; under the target's own
    # name, so that an ONNX copy's manifest is found beside it as it will be.
    return target.parent / f".incoming-{os.getpid()}" / target.name


def _copy(sources: list[Path], copies: list[Path]) -> None:
    for source, copy in zip(sources, copies):
        if source.is_file():
            copy.parent.mkdir(exist_ok=True)
            shutil.copyfile(source, copy)
            _flush_to_disk(copy)


def _rename(copies: list[Path], targets: list[Path]) -> None:
    for copy, target in zip(copies, targets):
        if copy.is_file():
            os.replace(copy, target)
        else:
            target.unlink(missing_ok=True)
    for folder in {target.parent for target in targets}:
        _flush_to_disk(folder)


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
