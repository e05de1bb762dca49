"""One interface over the two engines the variants run on: TorchScript (torch) and ONNX Runtime.

Both take a float32 batch N×3×224×224 in [0, 1] and return logits, so accuracy, agreement
and latency are measured the same way for every variant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from classifier.engines import OnnxRuntimeEngine, TorchScriptEngine
from classifier.model import load_model


class TorchScriptRuntime:
    """A model file loaded by the service's own loader, run by the service's own engine."""

    engine = "torch (TorchScript)"

    def __init__(self, path: str | Path, threads: int):
        torch.set_num_threads(threads)
        self.run = TorchScriptEngine(load_model(path))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)


class OnnxRuntime:
    """An ONNX file in the service's ONNX Runtime engine, set up as each worker sets it up."""

    engine = "ONNX Runtime (CPU)"

    def __init__(self, path: str | Path, threads: int):
        self.run = OnnxRuntimeEngine(path, threads)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)


def probabilities(runtime, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Softmax over uint8 N×3×224×224 images, in batches, as the service computes it."""
    rows = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].float().div(255).numpy()
        rows.append(torch.softmax(torch.from_numpy(runtime.logits(batch)).float(), dim=1))
    return torch.cat(rows)
