"""Pictures for the notebook: learning curves, the confusion matrix, images with captions."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

from .loop import History


def plot_history(history: History):
    """Loss and accuracy per epoch, training beside validation."""
    epochs = [row["epoch"] for row in history.epochs]
    figure, (losses, accuracies) = plt.subplots(1, 2, figsize=(11, 3.8))
    losses.plot(epochs, [r["train_loss"] for r in history.epochs], "o-", label="training (augmented, label-smoothed)")
    losses.plot(epochs, [r["val_loss"] for r in history.epochs], "o-", label="validation")
    losses.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    accuracies.plot(epochs, [r["train_accuracy"] for r in history.epochs], "o-", label="training (augmented)")
    accuracies.plot(epochs, [r["val_accuracy"] for r in history.epochs], "o-", label="validation")
    accuracies.set(title="Top-1 accuracy", xlabel="epoch", ylim=(0, 1.02))
    for axes in (losses, accuracies):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return figure


def plot_confusion(matrix: torch.Tensor, classes: Sequence[str]):
    """Counts per (true, predicted) pair; the diagonal is what the model gets right."""
    size = max(6, 0.45 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix.numpy(), cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=90)
    axes.set_yticks(range(len(classes)), classes)
    axes.set(xlabel="predicted", ylabel="true class", title="Validation confusion matrix")
    top = int(matrix.max()) or 1
    for (row, column), count in zip(torch.cartesian_prod(torch.arange(len(classes)), torch.arange(len(classes))).tolist(), matrix.flatten().tolist()):
        if count:
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > top / 2 else "black")
    figure.tight_layout()
    return figure


def show_images(images: torch.Tensor, captions: Sequence[str], columns: int = 4):
    """uint8 N×3×H×W images in a grid, each with its caption."""
    rows = max(1, -(-len(images) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, image, caption in zip(grid.flat, images, captions):
        axes.imshow(image.permute(1, 2, 0).numpy())
        axes.set_title(caption, fontsize=9)
    figure.tight_layout()
    return figure
