"""Which engine serves the model, and why: the ONNX copy, the evidence that it is one, the choice.

``model.zip`` is the contract. ``model.onnx`` is an ONNX copy of it, made by ``python -m
training.variants`` and committed beside it with its manifest, ``model.onnx.json``. The
evidence is recorded when the copy is made, where torch is at hand (``write_manifest`` in
training/onnx_variants.py): the
SHA-256 of the model file it was made from and of the copy itself, the TorchScript model's own
probabilities on the fixed smoke batch (``classifier.model.smoke_batch``), how far ONNX
Runtime's were from them, the tolerance and both engines' versions. ``export_model``
(training/export.py) records the same TorchScript answers in every model file's own meta.json
(``SMOKE_ANSWERS``).

Each worker then decides once, at start-up, without torch and without another process
(``choose_engine``): ONNX Runtime serves the copy when its manifest names the served file by
SHA-256 (else the copy is stale, or another model's), the copy is the file the manifest
describes, and ONNX Runtime's own answers on the smoke batch, the warm-up it runs anyway,
match the TorchScript answers within ``AGREEMENT_TOLERANCE``. Those reference answers come
from the model file's meta.json when it has them, so a manifest edited to name another model
is caught; from the manifest's record otherwise (files exported before meta.json held them).
Otherwise TorchScript serves, and the reason goes to the log and to /health's
``engine_reason``; under ``INFERENCE_ENGINE=onnxruntime`` the start stops with it instead.
``check-model`` and ``swap-model`` come through the same function (``Classifier.setup``).

The page's "On this device" path hands browsers the form ``training.variants`` chose for them
(``model-browser.onnx``: the copy itself, or a smaller form made from it, measured on the
validation split) while its manifest names the served model the same way
(``matching_onnx_copy``; ``web/device.py``). A new ``model.zip`` without new copies turns both
off with a reason instead of running an old model; the server's engine never runs a form that
does not give the model file's answers, whatever its manifest says.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .engines import OnnxRuntimeEngine, TorchScriptEngine, softmax, trim_heap
from .errors import ModelContractError, OnnxCopyUnavailable
from .model import SMOKE_ANSWERS, LoadedModel, load_model, read_meta, smoke_batch

log = logging.getLogger(__name__)

ENGINES = ("auto", "onnxruntime", "torchscript")
# Largest difference in any class probability between the two engines that still counts as
# the same model: float rounding stays far below it, a different model far above
# (docs/model-variants.md has the agreement measured). A worker applies this one, whatever
# a manifest says.
AGREEMENT_TOLERANCE = 1e-4
MANIFEST_SUFFIX = ".json"
REGENERATE = "Run `python -m training.variants` to export it again from the served model."
_ENGINE_NAMES = {"onnxruntime": "ONNX Runtime", "torchscript": "TorchScript"}


@dataclass(frozen=True)
class OnnxCopy:
    """An ONNX file that matches the served model, and its manifest (what the page needs to run it)."""

    path: Path
    manifest: dict


@dataclass(frozen=True)
class EngineChoice:
    """What a process serves the model with, and why (the log's and /health's ``engine_reason``)."""

    model: LoadedModel
    engine: Callable[[np.ndarray], np.ndarray]
    reason: str


def choose_engine(setting: str, model_path, onnx_path, threads: int) -> EngineChoice:
    """Which engine serves ``model_path`` under ``INFERENCE_ENGINE=setting``, loaded and warmed up.

    ``auto`` serves the ONNX copy at ``onnx_path`` when it passes ``serve_onnx_copy``'s checks,
    else TorchScript; ``onnxruntime`` insists on the copy; ``torchscript`` never uses it.
    Raises ``ModelContractError`` for what must not be served, ``ValueError`` for a bad setting.
    """
    if setting not in ENGINES:
        raise ValueError(f"INFERENCE_ENGINE must be one of {', '.join(ENGINES)}, not {setting!r}")
    choice, reason = None, "INFERENCE_ENGINE=torchscript"
    if setting != "torchscript":
        try:
            choice = serve_onnx_copy(model_path, onnx_path, threads)
        except OnnxCopyUnavailable as refusal:
            if setting == "onnxruntime":
                raise ModelContractError(f"INFERENCE_ENGINE=onnxruntime, but {refusal.message}") from refusal
            reason = refusal.message
    if choice is None:
        import torch  # the TorchScript path: the only one that needs it

        torch.set_num_threads(threads)
        model = load_model(model_path)
        choice = EngineChoice(model, TorchScriptEngine(model), reason)
    log.info("serving with %s: %s", _ENGINE_NAMES[choice.engine.name], choice.reason)
    return choice


def serve_onnx_copy(model_path, onnx_path, threads: int) -> EngineChoice:
    """ONNX Runtime on the copy, once it proved to be ``model_path``'s; never imports torch.

    Raises ``OnnxCopyUnavailable`` with the reason when the copy must not be served.
    """
    started = time.perf_counter()
    if not onnx_path:
        raise OnnxCopyUnavailable("no ONNX copy is configured (ONNX_MODEL_PATH is empty).")
    model_path, onnx_path = Path(model_path), Path(onnx_path)
    manifest = matching_onnx_copy(onnx_path, model_path).manifest
    meta = read_meta(model_path)
    reference, source = _reference_answers(meta, manifest, model_path, manifest_path(onnx_path))
    if list(reference["labels"]) != list(manifest["labels"]):
        raise OnnxCopyUnavailable(f"{manifest_path(onnx_path)} lists other labels than {source}.")
    try:
        engine = OnnxRuntimeEngine(onnx_path, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise OnnxCopyUnavailable(f"ONNX Runtime cannot load {onnx_path}: {exc}") from exc
    if file_sha256(onnx_path) != manifest["sha256"]:  # the file ONNX Runtime read is the one described
        raise OnnxCopyUnavailable(f"{onnx_path} changed while it was being loaded.")
    difference = _smoke_difference(engine, reference, onnx_path, source)
    for _ in range(2):  # the first ONNX Runtime calls are slow; requests mostly run one image
        engine(smoke_batch(1))
    trim_heap()  # what hashing, loading and the first calls freed
    model = LoadedModel(module=None, labels=tuple(manifest["labels"]), meta=meta, path=str(model_path),
                        load_seconds=time.perf_counter() - started)
    reason = (f"{onnx_path.name} answers as {model_path.name} does: max |Δp| {difference:.1e} "
              f"on the smoke batch against the TorchScript answers in {source}")
    return EngineChoice(model, engine, reason)


def _reference_answers(meta: dict, manifest: dict, model_path: Path, manifest_file: Path) -> tuple[dict, str]:
    """The TorchScript answers to compare with, and where: the model file's own, else the manifest's."""
    if SMOKE_ANSWERS in meta:
        recorded, source = meta[SMOKE_ANSWERS], f"{model_path.name}'s meta.json"
    else:
        recorded = (manifest.get("evidence") or {}).get(SMOKE_ANSWERS)
        source = f"{manifest_file.name}'s evidence"
    if not isinstance(recorded, dict) or not isinstance(recorded.get("labels"), list):
        raise OnnxCopyUnavailable(f"{source} records no TorchScript answers to compare the copy with. "
                                  f"{REGENERATE}")
    return recorded, source


def _smoke_difference(engine: OnnxRuntimeEngine, reference: dict, onnx_path: Path, source: str) -> float:
    """The largest difference between ONNX Runtime's probabilities on the smoke batch and the record's."""
    try:
        expected = np.asarray(reference["probabilities"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise OnnxCopyUnavailable(f"{source} holds no smoke-batch probabilities ({exc}).") from exc
    try:
        got = softmax(engine(smoke_batch()))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise OnnxCopyUnavailable(f"{onnx_path} failed on the smoke batch: {exc}") from exc
    if got.shape != expected.shape:
        raise OnnxCopyUnavailable(f"{onnx_path} gives {got.shape} probabilities on the smoke batch, "
                                  f"{source} records {expected.shape}.")
    difference = float(np.abs(got - expected).max())
    if not difference <= AGREEMENT_TOLERANCE:  # NaN fails too
        raise OnnxCopyUnavailable(f"{onnx_path} disagrees with the TorchScript answers in {source} "
                                  f"on the smoke batch (max |Δp| {difference:.1e}, "
                                  f"over {AGREEMENT_TOLERANCE:.0e}).")
    return difference


def manifest_path(onnx_path: str | Path) -> Path:
    return Path(f"{onnx_path}{MANIFEST_SUFFIX}")


def matching_onnx_copy(onnx_path: str | Path, served_model_path: str | Path) -> OnnxCopy:
    """The ONNX copy of the served model; ``OnnxCopyUnavailable`` with the reason if none."""
    onnx_path, served = Path(onnx_path), Path(served_model_path)
    files = (onnx_path, manifest_path(onnx_path), served)
    for path in files:
        if not path.is_file():
            raise OnnxCopyUnavailable(f"{path} does not exist. {REGENERATE}")
    # Hashing the model files on every request would cost more than the request: hash
    # them again only when one changed.
    result = _checked(*(_stamp(path) for path in files))
    if isinstance(result, OnnxCopyUnavailable):
        raise result
    return result


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _checked(onnx: tuple, manifest: tuple, served: tuple) -> OnnxCopy | OnnxCopyUnavailable:
    """The check, cached by the files' paths, times and sizes; a refusal is cached too."""
    try:
        return _check(Path(onnx[0]), Path(manifest[0]), Path(served[0]))
    except OnnxCopyUnavailable as refusal:
        return refusal


def _check(onnx_path: Path, manifest_file: Path, served_path: Path) -> OnnxCopy:
    try:
        data = json.loads(manifest_file.read_text())
        labels, expected_sha, source_sha = data["labels"], data["sha256"], data["source"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OnnxCopyUnavailable(f"{manifest_file} is not an ONNX-copy manifest ({exc}). {REGENERATE}")
    if file_sha256(onnx_path) != expected_sha:
        raise OnnxCopyUnavailable(f"{onnx_path} is not the file {manifest_file} describes. {REGENERATE}")
    if file_sha256(served_path) != source_sha:
        raise OnnxCopyUnavailable(
            f"{onnx_path} was exported from another model than {os.path.basename(served_path)}, "
            f"which the server now serves. {REGENERATE}"
        )
    if not isinstance(labels, list) or not labels:
        raise OnnxCopyUnavailable(f"{manifest_file} lists no labels. {REGENERATE}")
    return OnnxCopy(path=onnx_path, manifest=data)
