"""An ONNX copy of the served model, and whether it still is one: the manifest beside it.

The copy, ``model.onnx``, is made from ``model.zip`` by ``python -m training.variants`` and
committed next to it; its manifest, ``model.onnx.json``, carries the labels and names the
model file it was made from by its SHA-256. Both users of the copy take it only while it
matches the model served: the server's ONNX Runtime engine (``classifier.verified_copy``
checks its answers too) and the page's "On this device" path, which runs it with
onnxruntime-web (``web/device.py``). So a new ``model.zip`` (a commit, or ``flask
swap-model``) without a new ``model.onnx`` turns both off with a reason instead of running an
old model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import OnnxCopyUnavailable, ModelContractError
from .model import read_meta

MANIFEST_SUFFIX = ".json"
REGENERATE = "Run `python -m training.variants` to export it again from the served model."


@dataclass(frozen=True)
class OnnxCopy:
    """An ONNX file that matches the served model, and its manifest (what the page needs to run it)."""

    path: Path
    manifest: dict


def manifest_path(onnx_path: str | Path) -> Path:
    return Path(f"{onnx_path}{MANIFEST_SUFFIX}")


def write_manifest(onnx_path: str | Path, model_path: str | Path, labels, meta: dict) -> Path:
    """Describe ``onnx_path``, exported from ``model_path``, for the page and the server."""
    onnx_path = Path(onnx_path)
    manifest = {
        "format": "onnx",
        "file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "name": meta.get("name", ""),
        "version": meta.get("version", ""),
        "labels": list(labels),
        "input": {
            "name": "pixels",
            "shape": ["batch", 3, 224, 224],
            "description": "RGB in [0, 1], resized to 224x224 as the server does (Pillow bilinear, no crop)",
        },
        "output": {"name": "logits", "shape": ["batch", len(labels)]},
        "source": {"file": Path(model_path).name, "sha256": model_identity(model_path)},
    }
    path = manifest_path(onnx_path)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


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


def model_identity(model_path: str | Path) -> str:
    """The SHA-256 of the trained model a file holds: its source's for a variant, else its own."""
    source = read_meta(model_path).get("source") or {}
    return source.get("sha256") or file_sha256(model_path)


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
    try:
        served_identity = model_identity(served_path)
    except ModelContractError as exc:
        raise OnnxCopyUnavailable(f"The served model's meta.json cannot be read: {exc}") from exc
    if served_identity != source_sha:
        raise OnnxCopyUnavailable(
            f"{onnx_path} was exported from another model than {os.path.basename(served_path)}, "
            f"which the server now serves. {REGENERATE}"
        )
    if not isinstance(labels, list) or not labels:
        raise OnnxCopyUnavailable(f"{manifest_file} lists no labels. {REGENERATE}")
    return OnnxCopy(path=onnx_path, manifest=data)
