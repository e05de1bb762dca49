"""Checks an exported model must pass before it is trusted, and the metrics it is judged by."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from classifier.model import load_model
from classifier.pipeline import Classifier

from .loop import predict_probabilities


@dataclass(frozen=True)
class Agreement:
    """How closely two ways of computing the same predictions match."""

    images: int
    top1_agreement: float
    max_probability_difference: float
    accuracy: float  # of the second way, against the true classes


def agreement(reference: torch.Tensor, other: torch.Tensor, targets: torch.Tensor) -> Agreement:
    return Agreement(
        images=len(targets),
        top1_agreement=float((reference.argmax(1) == other.argmax(1)).float().mean()),
        max_probability_difference=float((reference - other).abs().max()),
        accuracy=float((other.argmax(1) == targets).float().mean()),
    )


def probabilities(engine, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Softmax over uint8 N×3×224×224 images, in batches, through one of the service's engines."""
    rows = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].float().div(255).numpy()
        rows.append(torch.softmax(torch.from_numpy(engine(batch)).float(), dim=1))
    return torch.cat(rows)


def check_export(path: str | Path, eager_model: nn.Module, labels: Sequence[str], images: torch.Tensor, targets: torch.Tensor) -> Agreement:
    """Reload the file through the service's loader (the contract check) and compare with eager."""
    loaded = load_model(path)
    if list(loaded.labels) != list(labels):
        raise AssertionError(f"exported labels {loaded.labels} differ from the training classes {labels}")
    return agreement(predict_probabilities(eager_model, images), predict_probabilities(loaded.module, images), targets)


def check_service_path(path: str | Path, files: Sequence[Path], notebook_probabilities: torch.Tensor, targets: torch.Tensor) -> Agreement:
    """Classify the original files as the service does (bytes in) and compare with the notebook.

    The notebook evaluates tensors it loaded once; the service decodes each upload itself.
    Agreement here shows both paths feed the model the same pixels.
    """
    classifier = Classifier(load_model(path))
    count = len(classifier.labels)
    predictions = classifier.classify_many([Path(f).read_bytes() for f in files], top_k=count)
    column = {label: i for i, label in enumerate(classifier.labels)}
    served = torch.zeros(len(files), count)
    for row, prediction in enumerate(predictions):
        if not hasattr(prediction, "top"):
            raise AssertionError(f"the service refused {files[row]}: {prediction}")
        for label, score in prediction.top:
            served[row, column[label]] = score
    return agreement(notebook_probabilities, served, targets)


def confusion_matrix(probabilities: torch.Tensor, targets: torch.Tensor, classes: int) -> torch.Tensor:
    """Rows are the true classes, columns the predicted ones."""
    predicted = probabilities.argmax(1)
    return torch.bincount(targets * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def worst_predictions(probabilities: torch.Tensor, targets: torch.Tensor, count: int = 8) -> list[int]:
    """Indices of the mistakes, most confident first; then the least sure right answers."""
    predicted = probabilities.argmax(1)
    true_score = probabilities[torch.arange(len(targets)), targets]
    wrong = (predicted != targets).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(probabilities[i, predicted[i]]))
    right = (predicted == targets).nonzero().flatten().tolist()
    right.sort(key=lambda i: float(true_score[i]))
    return (wrong + right)[:count]
