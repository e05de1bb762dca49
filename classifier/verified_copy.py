"""The ONNX copy of the served model: checked against ``model.zip`` once, then served without torch.

``model.zip`` is the contract. Before a worker may answer with ``model.onnx`` instead, the
copy is checked against it: the TorchScript file loads and keeps its contract (labels,
output shape, finite probabilities: ``classifier.model.load_model``), the copy's manifest
names that file by its SHA-256 and lists its labels, and both engines give the same
probabilities on a smoke batch, within ``AGREEMENT_TOLERANCE``. That check needs torch,
and torch is most of a worker's memory (docs/memory.md), so it runs once, in a process that
then exits (``python -m classifier.verified_copy``): gunicorn's master starts it before it
forks any worker and again when it reloads them (web/serving_check.py), and ``check-model``
and ``swap-model`` run it on the file they are given.

Its outcome is a *record*, a small JSON file in a store directory, named and bound by the
SHA-256 of both files, that also holds the labels and ``meta.json`` read from the
TorchScript file. A worker hashes the two files it is about to serve, finds the record for
exactly those bytes and the ONNX Runtime it runs, and serves the copy with what the record
says; any change to either file (a swap, a new deploy, a half-copied file) finds no record,
and the check runs again before anything is served.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import memory
from .onnx_copy import file_sha256, matching_onnx_copy
from .engines import AGREEMENT_TOLERANCE, OnnxRuntimeEngine, softmax
from .errors import OnnxCopyUnavailable, ModelContractError
from .model import LoadedModel, smoke_batch

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RECORD_FORMAT = 1
VERIFIED, REFUSED = "verified", "refused"
# Exit statuses of ``python -m classifier.verified_copy``.
EXIT_VERIFIED, EXIT_MODEL_UNFIT, EXIT_USAGE, EXIT_COPY_REFUSED = 0, 1, 2, 3
# The check loads torch and both models: seconds of work, so a caller waits this long at most.
CHECK_TIMEOUT_S = 300


@dataclass(frozen=True)
class CopyCheck:
    """The outcome of checking one ONNX file against one model file, bound to both by SHA-256."""

    verdict: str  # VERIFIED or REFUSED
    reason: str
    model_sha256: str
    onnx_sha256: str
    labels: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)
    max_difference: float | None = None
    tolerance: float = AGREEMENT_TOLERANCE
    # The engines the copy was compared on: a new ONNX Runtime must be checked again.
    versions: dict = field(default_factory=dict)
    model_path: str = ""
    onnx_path: str = ""
    checked_at: str = ""
    seconds: float = 0.0
    format: int = RECORD_FORMAT

    @property
    def verified(self) -> bool:
        return self.verdict == VERIFIED

    def to_json(self) -> dict:
        return {**asdict(self), "labels": list(self.labels)}

    @classmethod
    def from_json(cls, data: dict) -> "CopyCheck":
        known = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in data.items() if key in known}
        return cls(**{**values, "labels": tuple(values.get("labels", ()))})


def installed_versions(*packages: str) -> dict[str, str]:
    """Each package's installed version, read from its metadata (nothing is imported); "" if absent."""
    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = ""
    return found


def engine_versions() -> dict:
    """The installed torch and ONNX Runtime: a record holds for the engines it was checked on."""
    return installed_versions("torch", "onnxruntime")


def default_store() -> Path:
    """A directory of this user's own, beside the system's temporary files."""
    return Path(tempfile.gettempdir()) / f"image-classifier-{os.getuid()}" / "verified-copies"


class CheckStore:
    """A directory of records, one per (model, ONNX file) pair, named by both hashes."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory else default_store()

    def path_for(self, model_sha256: str, onnx_sha256: str) -> Path:
        return self.directory / f"{model_sha256}-{onnx_sha256}.json"

    def find(self, model_sha256: str, onnx_sha256: str) -> CopyCheck | None:
        """The record for exactly these bytes and these engines, or None."""
        path = self.path_for(model_sha256, onnx_sha256)
        try:
            if path.stat().st_uid != os.getuid():
                log.warning("ignoring %s: it belongs to another user", path)
                return None
            check = CopyCheck.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if (check.format, check.model_sha256, check.onnx_sha256) != (RECORD_FORMAT, model_sha256, onnx_sha256):
            return None
        if check.versions != engine_versions():
            return None
        return check

    def save(self, check: CopyCheck) -> Path:
        """Write the record whole or not at all (a worker may read it at any moment)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path_for(check.model_sha256, check.onnx_sha256)
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(check.to_json(), indent=2) + "\n")
        os.replace(staged, path)
        return path


def check_copy(model_path: str | Path, onnx_path: str | Path) -> CopyCheck:
    """The check itself, with torch: load ``model_path``, compare the copy; a refusal is a verdict.

    Raises ``ModelContractError`` if ``model_path`` itself cannot be served on any engine.
    """
    from .model import load_model  # torch: this function runs in a process that then exits

    started = time.perf_counter()
    model_path, onnx_path = Path(model_path), Path(onnx_path)
    # Hashed before anything is read, so that the record names the bytes that were checked
    # (a file replaced meanwhile gets another hash, and no worker finds this record for it).
    model_sha256 = file_sha256(model_path)
    onnx_sha256 = file_sha256(onnx_path) if onnx_path.is_file() else ""
    model = load_model(model_path, warmup_runs=1)  # raises ModelContractError: not servable at all
    outcome = dict(
        model_sha256=model_sha256, onnx_sha256=onnx_sha256, labels=model.labels, meta=model.meta,
        versions=engine_versions(), model_path=str(model_path), onnx_path=str(onnx_path),
        checked_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    try:
        manifest = matching_onnx_copy(onnx_path, model_path).manifest  # names model.zip by SHA-256
        if list(manifest["labels"]) != list(model.labels):
            raise OnnxCopyUnavailable(f"{onnx_path}'s manifest lists other labels than {model_path.name}.")
        difference = _smoke_difference(model, onnx_path)
        if (file_sha256(model_path), file_sha256(onnx_path)) != (model_sha256, onnx_sha256):
            raise OnnxCopyUnavailable(f"{model_path} or {onnx_path} changed while it was being checked.")
    except OnnxCopyUnavailable as refusal:
        return CopyCheck(REFUSED, refusal.message, seconds=time.perf_counter() - started, **outcome)
    return CopyCheck(
        VERIFIED, f"{onnx_path.name} answers as {model_path.name} does (max |Δp| {difference:.1e} on a smoke batch)",
        max_difference=difference, seconds=time.perf_counter() - started, **outcome,
    )


def _smoke_difference(model: LoadedModel, onnx_path: Path) -> float:
    from .engines import TorchScriptEngine

    smoke = smoke_batch()
    expected = softmax(TorchScriptEngine(model)(smoke))
    try:
        got = softmax(OnnxRuntimeEngine(onnx_path, threads=1)(smoke))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise OnnxCopyUnavailable(f"{onnx_path} failed on a smoke batch: {exc}") from exc
    if got.shape != expected.shape:
        raise OnnxCopyUnavailable(f"{onnx_path} gives {got.shape} outputs, the model {expected.shape}.")
    difference = float(abs(got - expected).max())
    if not difference <= AGREEMENT_TOLERANCE:  # NaN fails too
        raise OnnxCopyUnavailable(
            f"{onnx_path} disagrees with {model.path} on a smoke batch (max |Δp| {difference:.1e})."
        )
    return difference


def check_in_subprocess(model_path: str | Path, onnx_path: str | Path, store: CheckStore) -> CopyCheck:
    """``check_once`` in a fresh Python process that exits after it, so torch never enters this one.

    The record is saved in ``store`` and returned. Raises ``OnnxCopyUnavailable`` for a
    copy refused before the check, ``ModelContractError`` when the model file cannot be
    served at all or the check could not run.
    """
    command = [sys.executable, "-m", "classifier.verified_copy", "--model", str(Path(model_path).resolve()),
               "--onnx", str(Path(onnx_path).resolve()), "--store", str(store.directory.resolve())]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ModelContractError(f"checking {onnx_path} against {model_path} took over {CHECK_TIMEOUT_S}s") from exc
    last_line = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    if done.returncode in (EXIT_VERIFIED, EXIT_COPY_REFUSED) and done.stdout.strip():
        return CopyCheck.from_json(json.loads(done.stdout.strip().splitlines()[-1]))
    if done.returncode == EXIT_COPY_REFUSED:
        raise OnnxCopyUnavailable(last_line.removeprefix("refused: "))
    raise ModelContractError(last_line.removeprefix("error: "))


def serve_verified_copy(
    model_path: str | Path, onnx_path: str | Path | None, threads: int, store: CheckStore
) -> tuple[LoadedModel, OnnxRuntimeEngine, CopyCheck]:
    """What a lean worker loads: the copy in ONNX Runtime, and the model as its record describes it.

    Raises ``OnnxCopyUnavailable`` with the reason when the copy must not be served; torch
    is not imported here (the check, where one is still needed, runs in a subprocess).
    """
    started = time.perf_counter()
    if not onnx_path:
        raise OnnxCopyUnavailable("no ONNX copy is configured (ONNX_MODEL_PATH is empty).")
    # Cheap refusals first, without a subprocess: no copy, or one made from another model. The
    # copy's hash is its manifest's, which that check just compared with the file.
    onnx_sha256 = matching_onnx_copy(onnx_path, model_path).manifest["sha256"]
    model_sha256 = file_sha256(model_path)
    check = store.find(model_sha256, onnx_sha256)
    if check is None:
        log.info("no check on record for %s and %s: checking now, in a subprocess", model_path, onnx_path)
        check = check_in_subprocess(model_path, onnx_path, store)
    if not check.verified:
        raise OnnxCopyUnavailable(check.reason)
    if (check.model_sha256, check.onnx_sha256) != (model_sha256, onnx_sha256):
        raise OnnxCopyUnavailable(f"{model_path} or {onnx_path} changed while it was being checked.")
    engine = OnnxRuntimeEngine(onnx_path, threads)
    if file_sha256(onnx_path) != onnx_sha256:  # the file ONNX Runtime read is the one checked
        raise OnnxCopyUnavailable(f"{onnx_path} changed while it was being loaded.")
    for _ in range(3):  # the first ONNX Runtime calls are slow
        engine(smoke_batch(1))
    memory.trim_heap()  # what hashing, loading and the first calls freed
    model = LoadedModel(module=None, labels=check.labels, meta=check.meta, path=str(model_path),
                        load_seconds=time.perf_counter() - started)
    return model, engine, check


def check_once(model_path: str | Path, onnx_path: str | Path | None, store: CheckStore, reuse: bool = False) -> CopyCheck:
    """The verdict on ``onnx_path`` as a copy of ``model_path``, recorded in ``store``; with torch.

    The cheap refusals come first, without torch (no copy, or one whose manifest names another
    model): they raise ``OnnxCopyUnavailable``, as they do in a worker. With ``reuse`` a
    record of these very bytes stands; otherwise the check runs afresh. Raises
    ``ModelContractError`` when ``model_path`` cannot be served on any engine.
    """
    if not onnx_path:
        raise OnnxCopyUnavailable("no ONNX copy is configured (ONNX_MODEL_PATH is empty).")
    onnx_sha256 = matching_onnx_copy(onnx_path, model_path).manifest["sha256"]  # compared with the file
    if reuse:
        check = store.find(file_sha256(model_path), onnx_sha256)
        if check is not None:
            return check
    check = check_copy(model_path, onnx_path)
    store.save(check)
    return check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check an ONNX copy against its model file and record the verdict.")
    parser.add_argument("--model", required=True, help="the TorchScript model file (model.zip)")
    parser.add_argument("--onnx", required=True, help="its ONNX copy (model.onnx, with model.onnx.json beside it)")
    parser.add_argument("--store", help="where records go (default: a directory of this user's under the temp dir)")
    parser.add_argument("--reuse", action="store_true", help="do nothing if these bytes were checked already")
    args = parser.parse_args(argv)
    try:
        check = check_once(args.model, args.onnx, CheckStore(args.store), reuse=args.reuse)
    except OnnxCopyUnavailable as refusal:
        print(f"refused: {refusal.message}", file=sys.stderr)
        return EXIT_COPY_REFUSED
    except ModelContractError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MODEL_UNFIT
    print(json.dumps(check.to_json()))
    return EXIT_VERIFIED if check.verified else EXIT_COPY_REFUSED


if __name__ == "__main__":
    sys.exit(main())
