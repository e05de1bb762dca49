"""Load a TorchScript model file and check it against the model-file contract (docs/model.md#the-model-file).

Loading runs code from the file (TorchScript is a program), so only trusted files from
disk are ever loaded; nothing here accepts a model over the network.

torch is imported by the functions that load or run the file, not by this module: a worker
that serves the ONNX copy (classifier/onnx_copy.py) reads what it needs about the model from
here without ever importing torch (docs/memory.md).
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelContractError
from .images import INPUT_SIZE

META_FILE = "meta.json"
# meta.json key of the model's own probabilities on ``smoke_batch()``, recorded when it is
# exported: what its ONNX copy must answer (classifier/onnx_copy.py). Not shown in /model.
SMOKE_ANSWERS = "smoke_answers"


@dataclass(frozen=True)
class LoadedModel:
    """A checked, warmed-up model and what it says about itself."""

    module: Any  # the torch.jit.ScriptModule; None where another engine answers for it
    labels: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    path: str = ""
    load_seconds: float = 0.0
    # From meta.json, read once: every answer and record names them.
    name: str = field(init=False)
    version: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "name", str(self.meta.get("name", Path(self.path).stem or "model")))
        object.__setattr__(self, "version", str(self.meta.get("version", "unknown")))

    def describe(self) -> dict:
        """Metadata for people and for /model: the file's meta.json plus what was checked."""
        return {
            **{key: value for key, value in self.meta.items() if key != SMOKE_ANSWERS},
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "num_classes": len(self.labels),
            "input_size": list(INPUT_SIZE),
        }


def load_model(path: str | Path, warmup_runs: int = 3) -> LoadedModel:
    """Load, check and warm up a model file; raise ``ModelContractError`` if it is unfit."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelContractError(f"Model file not found: {path}")
    started = time.perf_counter()
    meta = read_meta(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError or zipfile errors
        raise ModelContractError(f"{path} is not a TorchScript file: {exc}") from exc
    module.eval()
    labels = _read_labels(module, path)
    _check_forward(module, labels, path, runs=max(1, warmup_runs))
    return LoadedModel(
        module=module,
        labels=labels,
        meta=meta,
        path=str(path),
        load_seconds=time.perf_counter() - started,
    )


def read_meta(path: str | Path) -> dict:
    """A model file's meta.json without loading the model (TorchScript files are zip files)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{META_FILE}")]
            raw = archive.read(names[0]) if names else b""
    except (OSError, zipfile.BadZipFile, KeyError):
        return {}  # torch.jit.load says what is wrong with the file
    return _read_meta(raw, Path(path))


def _read_labels(module, path: Path) -> tuple[str, ...]:
    labels = getattr(module, "labels", None)
    if labels is None:
        raise ModelContractError(
            f"{path} has no 'labels' attribute. Export with preserved_attrs=['labels'] "
            "when freezing (see training.export)."
        )
    labels = tuple(labels)
    if not labels or not all(isinstance(label, str) and label for label in labels):
        raise ModelContractError(f"{path}: 'labels' must be a non-empty list of strings.")
    if len(set(labels)) != len(labels):
        raise ModelContractError(f"{path}: 'labels' has duplicates.")
    return labels


def _read_meta(raw, path: Path) -> dict:
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelContractError(f"{path}: {META_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelContractError(f"{path}: {META_FILE} must hold a JSON object.")
    return meta


def smoke_batch(count: int = 2) -> np.ndarray:
    """Fixed pseudo-random images in [0, 1], float32 N×3×224×224: the same on every run and machine."""
    return np.random.default_rng(0).random((count, 3, *INPUT_SIZE), dtype=np.float32)


def _check_forward(module, labels, path: Path, runs: int) -> None:
    """Run a smoke batch: shapes match the labels and the outputs are finite.

    The same runs warm the model up, since the first TorchScript calls are slow.
    """
    import torch

    smoke = torch.from_numpy(smoke_batch())
    with torch.inference_mode():
        for _ in range(runs):
            try:
                logits = module(smoke[:1])
                logits = module(smoke)
            except Exception as exc:
                raise ModelContractError(
                    f"{path}: forward() failed on an N×3×{INPUT_SIZE[0]}×{INPUT_SIZE[1]} "
                    f"batch: {exc}"
                ) from exc
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, len(labels)):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ModelContractError(
            f"{path}: forward() returned {shape}, expected (N, {len(labels)}) "
            f"for {len(labels)} labels."
        )
    probabilities = torch.softmax(logits.float(), dim=1)
    if not torch.isfinite(probabilities).all() or not all(
        math.isclose(float(total), 1.0, abs_tol=1e-3) for total in probabilities.sum(dim=1)
    ):
        raise ModelContractError(f"{path}: forward() gives non-finite probabilities.")
