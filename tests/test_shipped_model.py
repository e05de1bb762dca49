"""The model.zip the repo ships meets the model-file contract (docs/model.md#the-model-file)."""

from __future__ import annotations

import pytest

from classifier.images import INPUT_SIZE
from classifier.model import load_model

from testing import ROOT

SHIPPED = ROOT / "model.zip"


@pytest.fixture(scope="module")
def shipped():
    return load_model(SHIPPED)


def test_labels_are_the_data_sets_classes(shipped, data_dir):
    classes = sorted(p.name for p in (data_dir / "ucmerced").iterdir() if p.is_dir())
    assert sorted(shipped.labels) == classes


def test_meta_carries_what_the_contract_lists(shipped):
    meta = shipped.meta
    for key in ("name", "version", "dataset", "classes", "input_size", "metrics", "created", "revision"):
        assert key in meta, f"meta.json lacks {key!r}"
    assert meta["classes"] == len(shipped.labels)
    assert meta["input_size"] == list(INPUT_SIZE)
    assert 0.0 <= float(meta["metrics"]["val_accuracy"]) <= 1.0


def test_file_is_small_enough_to_ship():
    assert SHIPPED.stat().st_size <= 20 * 1024 * 1024
