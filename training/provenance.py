"""What a model file says about where it came from (its meta.json)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TRAINING_CODE = ("training", "classifier", "train_notebook.ipynb")


def git_revision(repo: Path = REPO) -> str:
    """The commit the training code came from, marked ``-dirty`` if it had local changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", *TRAINING_CODE)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def model_meta(name: str, version: str, dataset: str, metrics: dict, training: dict, revision: str) -> dict:
    """meta.json for a trained model, as the model-file contract (docs/model.md#the-model-file) asks."""
    return {
        "name": name,
        "version": version,
        "dataset": dataset,
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "revision": revision,
        "architecture": "efficientnet-lite0 (ImageNet weights), fine-tuned",
        "training": training,
        "torch": torch.__version__,
    }
