"""The committed variants were made from the committed model.zip: a new model.zip needs `make variants`.

`make variants` (python -m training.variants) writes model.onnx and its manifest (the
browser's copy), model-int8.zip and docs/model-variants.md from model.zip; these tests fail
when any of them belongs to another model.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from classifier.onnx_copy import file_sha256, matching_onnx_copy
from classifier.model import load_model, read_meta
from training.data import load_images

from testing import ROOT

SHIPPED = ROOT / "model.zip"
AGAIN = "Run `make variants` after changing model.zip."


def test_the_browsers_copy_was_made_from_the_shipped_model():
    assert matching_onnx_copy(ROOT / "model.onnx", SHIPPED), AGAIN


def test_the_int8_file_was_made_from_the_shipped_model():
    assert read_meta(ROOT / "model-int8.zip")["source"]["sha256"] == file_sha256(SHIPPED), AGAIN


def test_the_variants_table_is_the_shipped_models():
    table = (ROOT / "docs" / "model-variants.md").read_text()
    assert f"SHA-256 `{file_sha256(SHIPPED)[:16]}" in table, AGAIN


def test_the_browsers_copy_gives_the_shipped_models_answers(data_dir):
    classes = sorted(path for path in (data_dir / "ucmerced").iterdir() if path.is_dir())
    batch = load_images([folder / f"{folder.name}05.jpg" for folder in classes]).float().div(255)
    with torch.inference_mode():
        expected = torch.softmax(load_model(SHIPPED).module(batch), dim=1).numpy()
    session = onnxruntime.InferenceSession(str(ROOT / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"pixels": batch.numpy()})[0]
    got = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    assert float(np.abs(got - expected).max()) < 1e-4


@pytest.mark.parametrize("name, limit_mb", [("model.onnx", 20), ("model-int8.zip", 6)])
def test_the_variants_are_small_enough_to_ship(name, limit_mb):
    assert (ROOT / name).stat().st_size <= limit_mb * 1024 * 1024
