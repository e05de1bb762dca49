"""The committed forms were made from the committed model.zip: a new model.zip needs `make variants`.

`make variants` (python -m training.variants) writes model.onnx (the server's copy),
model-browser.onnx (the page's form) with their manifests, and docs/model-variants.md from
model.zip; these tests fail when any of them belongs to another model, or when the browser's
form is not the one the rule picks on its own recorded figures.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from classifier.errors import ModelContractError
from classifier.onnx_copy import file_sha256, manifest_path, matching_onnx_copy
from classifier.model import load_model
from classifier.pipeline import Classifier
from training.data import load_images
from training.variants import BROWSER_MIN_AGREEMENT

from testing import ROOT

SHIPPED = ROOT / "model.zip"
BROWSER = ROOT / "model-browser.onnx"
AGAIN = "Run `make variants` after changing model.zip."
# Where the model's best class leads its runner-up by this much, the browser's form must keep it.
DECISIVE_MARGIN = 0.1


@pytest.fixture(scope="module")
def browser_manifest() -> dict:
    return json.loads(manifest_path(BROWSER).read_text())


def test_the_servers_copy_was_made_from_the_shipped_model():
    assert matching_onnx_copy(ROOT / "model.onnx", SHIPPED), AGAIN


def test_the_browsers_form_was_made_from_the_shipped_model_and_its_copy(browser_manifest):
    assert matching_onnx_copy(BROWSER, SHIPPED), AGAIN
    assert browser_manifest["made_from"] == {"file": "model.onnx", "sha256": file_sha256(ROOT / "model.onnx")}
    assert browser_manifest["labels"] == list(load_model(SHIPPED).labels)


def test_the_browsers_form_is_the_smallest_that_keeps_the_answers_on_validation(browser_manifest):
    forms = {form["form"]: form for form in browser_manifest["evidence"]["forms"]}
    assert set(forms) == {"fp32", "int8", "fp16"}
    fit = [form for form in forms.values() if form["top1_agreement"] >= BROWSER_MIN_AGREEMENT]
    assert browser_manifest["form"] == min(fit, key=lambda form: form["bytes"])["form"]
    assert forms[browser_manifest["form"]]["bytes"] == BROWSER.stat().st_size == browser_manifest["bytes"]
    assert browser_manifest["evidence"]["why"].startswith(browser_manifest["form"] + ": the smallest form")


def test_the_variants_table_is_the_shipped_models():
    table = (ROOT / "docs" / "model-variants.md").read_text()
    assert f"SHA-256 `{file_sha256(SHIPPED)[:16]}" in table, AGAIN


def fixture_batch(data_dir, number: str) -> torch.Tensor:
    classes = sorted(path for path in (data_dir / "ucmerced").iterdir() if path.is_dir())
    return load_images([folder / f"{folder.name}{number}.jpg" for folder in classes]).float().div(255)


def answers(path, batch: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"pixels": batch.numpy()})[0]
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def test_the_servers_copy_gives_the_shipped_models_answers(data_dir):
    batch = fixture_batch(data_dir, "05")
    with torch.inference_mode():
        expected = torch.softmax(load_model(SHIPPED).module(batch), dim=1).numpy()
    got = answers(ROOT / "model.onnx", batch)
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    assert float(np.abs(got - expected).max()) < 1e-4


def test_the_browsers_form_keeps_the_shipped_models_answers(data_dir):
    batch = fixture_batch(data_dir, "05")
    with torch.inference_mode():
        expected = torch.softmax(load_model(SHIPPED).module(batch), dim=1).numpy()
    got = answers(BROWSER, batch)
    best_two = np.sort(expected, axis=1)[:, -2:]
    decisive = best_two[:, 1] - best_two[:, 0] > DECISIVE_MARGIN
    assert np.array_equal(got.argmax(1)[decisive], expected.argmax(1)[decisive])
    assert float(0.5 * np.abs(got - expected).sum(1).mean()) < 0.1


def test_the_server_never_runs_a_form_that_changes_the_answers(browser_manifest):
    """ONNX Runtime on the server serves only a copy within 1e-4 of model.zip: not int8, not fp16."""
    if browser_manifest["form"] == "fp32":  # a model whose smaller forms all changed answers
        served = Classifier.setup(SHIPPED, threads=1, engine="onnxruntime", onnx_path=BROWSER)
        assert served.engine.name == "onnxruntime"
    else:
        with pytest.raises(ModelContractError, match="disagrees with the TorchScript answers"):
            Classifier.setup(SHIPPED, threads=1, engine="onnxruntime", onnx_path=BROWSER)


@pytest.mark.parametrize("name, limit_mb", [("model.onnx", 20), ("model-browser.onnx", 20)])
def test_the_forms_are_small_enough_to_ship(name, limit_mb):
    assert (ROOT / name).stat().st_size <= limit_mb * 1024 * 1024
    assert (ROOT / name).stat().st_size <= (ROOT / "model.onnx").stat().st_size
