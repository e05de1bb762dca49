"""Write a trained network as a model file under the contract: the one way to export.

The notebook, the int8 variant and the tests all call ``export_model``, so every model file
the service sees was built the same way. Serving never imports this module: it needs torch. (No `from __future__ import annotations`
here: TorchScript reads the real `List[str]` annotation.)
"""

import json
from pathlib import Path
from typing import List, Sequence, Union

import torch
from torch import nn

import numpy as np

from classifier.engines import softmax
from classifier.images import INPUT_SIZE
from classifier.model import META_FILE, SMOKE_ANSWERS, smoke_batch


class ServedModel(nn.Module):
    """Wraps a network with its input normalisation and its class names.

    Normalisation lives inside the file so that any client, the reference app included,
    only has to scale pixels to [0, 1].
    """

    labels: List[str]

    def __init__(self, network: nn.Module, labels: Sequence[str], mean, std):
        super().__init__()
        self.network = network
        self.labels = list(labels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.std)


# EfficientNet-Lite expects (x*255 - 127) / 128, i.e. mean 127/255 and std 128/255.
EFFICIENTNET_LITE_MEAN = (127.0 / 255,) * 3
EFFICIENTNET_LITE_STD = (128.0 / 255,) * 3


def smoke_answers(labels, logits: np.ndarray) -> dict:
    """A model's own answers on ``smoke_batch()``, as meta.json and the ONNX manifest record them."""
    probabilities = np.round(softmax(np.asarray(logits)), 8)  # far below the tolerance, and readable
    return {"images": "classifier.model.smoke_batch()", "labels": list(labels),
            "probabilities": probabilities.tolist()}


def export_model(
    network: nn.Module,
    labels: Sequence[str],
    meta: dict,
    path: Union[str, Path],
    mean=EFFICIENTNET_LITE_MEAN,
    std=EFFICIENTNET_LITE_STD,
) -> Path:
    """Trace, freeze and save ``network`` with normalisation, labels and meta.json.

    meta.json also records the file's own answers on the smoke batch: the reference that its
    ONNX copy is held to when a worker serves it without torch (classifier/onnx_copy.py).
    """
    path = Path(path)
    # Trace the network (any Python it has is fine) and script the wrapper around it:
    # tracing alone would drop `labels`, which is not a tensor.
    example = torch.rand(2, 3, *INPUT_SIZE)
    with torch.no_grad():
        traced = torch.jit.trace(network.eval(), example)
    wrapped = torch.jit.script(ServedModel(traced, labels, mean, std).eval())
    # Freezing inlines weights as constants for speed; `labels` must be kept by name.
    frozen = torch.jit.freeze(wrapped, preserved_attrs=["labels"])
    with torch.inference_mode():
        answers = smoke_answers(labels, frozen(torch.from_numpy(smoke_batch())).float().numpy())
    # What the file holds wins (a variant's meta starts as its source's).
    full_meta = {**meta, "classes": len(labels), "input_size": list(INPUT_SIZE), SMOKE_ANSWERS: answers}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(frozen, str(path), _extra_files={META_FILE: json.dumps(full_meta, indent=2)})
    return path
