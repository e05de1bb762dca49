"""The training notebook runs headless, top to bottom, and writes a model the service accepts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nbformat
import papermill
import pytest

from app import create_app
from classifier.onnx_copy import matching_onnx_copy
from classifier.drift import reference_distribution
from classifier.model import load_model

from testing import ROOT
from testing.samples import export_tiny_model

pytestmark = pytest.mark.slow

NOTEBOOK = ROOT / "train_notebook.ipynb"


FEEDBACK_CLASSES = ("beach", "river")


def export_feedback_folder(data_dir: Path, database: Path, folder: Path) -> Path:
    """The loop's first step, for real: the served model answers, users correct, the images are exported.

    The served model is the tiny one under three of the data set's class names (whatever
    model.zip is, its classes may not be the fixtures'): corrections name classes it knows.
    """
    served = export_tiny_model(folder.parent / "served.zip", labels=["airplane", *FEEDBACK_CLASSES])
    app = create_app({"TESTING": True, "MODEL_PATH": str(served), "TORCH_THREADS": 1,
                      "DATABASE_URL": f"sqlite:///{database}", "KEEP_IMAGES": True})
    client = app.test_client()
    for label in FEEDBACK_CLASSES:
        image = data_dir / "ucmerced" / label / f"{label}00.jpg"
        answer = client.post("/predict", data={"file": (io.BytesIO(image.read_bytes()), image.name)})
        assert answer.status_code == 200, answer.get_json()
        feedback = {"request_id": answer.headers["X-Request-ID"], "label": label}
        assert client.post("/feedback", json=feedback).status_code == 200
    result = app.test_cli_runner().invoke(args=["export-feedback", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data_dir):
    """One epoch on four images per class, plus the exported feedback: minutes cut to seconds."""
    out = tmp_path_factory.mktemp("notebook")
    model_path = out / "model.zip"
    feedback = export_feedback_folder(data_dir, out / "monitoring.sqlite", out / "feedback")
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out / "executed.ipynb"),
        parameters={
            "data_dir": str(data_dir / "ucmerced"),
            "extra_data_dir": str(feedback),
            "images_per_class": 4,
            "epochs": 1,
            "threads": 1,
            "output_path": str(model_path),
            "model_version": "0.0.0-test",
        },
        cwd=str(ROOT),
        kernel_name="python3",
        progress_bar=False,
    )
    return nbformat.read(out / "executed.ipynb", as_version=4), model_path


def test_notebook_has_a_papermill_parameters_cell():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("data_dir", "extra_data_dir", "epochs", "images_per_class", "seed", "output_path", "fine_tune"):
        assert f"{name} =" in tagged[0].source


def test_quick_run_executes_every_cell_without_error(quick_run):
    executed, _ = quick_run
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code_cells)
    errors = [out for cell in code_cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    text = "".join(out.get("text", "") for cell in code_cells for out in cell.get("outputs", []))
    assert "notebook vs service: top-1 agreement 100%" in text


def test_quick_run_writes_a_model_file_under_the_contract(quick_run, data_dir):
    _, model_path = quick_run
    model = load_model(model_path)  # the service's own contract check
    classes = sorted(p.name for p in (data_dir / "ucmerced").iterdir() if p.is_dir())
    assert list(model.labels) == classes
    meta = model.meta
    assert meta["version"] == "0.0.0-test" and meta["classes"] == len(classes)
    assert meta["input_size"] == [224, 224]
    for key in ("name", "dataset", "created", "revision", "metrics", "training"):
        assert meta[key], key
    assert meta["metrics"]["val_images"] == len(classes)  # one of four per class held out
    assert meta["training"]["extra_training_images"] == len(FEEDBACK_CLASSES)
    reference = reference_distribution(meta, model.labels)  # what the service scores drift against
    assert reference is not None and sum(reference.values()) == pytest.approx(1.0)
    assert 0.0 <= meta["metrics"]["val_accuracy"] <= 1.0
    assert meta["training"]["epochs"] == 1
    json.dumps(meta)  # plain JSON all the way down


def test_quick_run_makes_and_measures_the_forms_beside_its_model(quick_run):
    _, model_path = quick_run
    table = model_path.with_name("model-variants.md").read_text()  # not the repository's docs/
    for form in ("TorchScript float32", "ONNX float32", "ONNX int8", "ONNX float16"):
        assert f"| {form}" in table
    assert matching_onnx_copy(model_path.with_suffix(".onnx"), model_path)  # the server's copy matches
    browser = matching_onnx_copy(model_path.with_name("model-browser.onnx"), model_path)  # the page's form too
    assert browser.manifest["form"] in ("fp32", "int8", "fp16") and f"**The browser: " in table


def test_quick_run_trains_on_the_exported_feedback_beside_the_data_set(quick_run, data_dir):
    executed, _ = quick_run
    text = "".join(out.get("text", "") for cell in executed.cells for out in cell.get("outputs", []))
    assert f"extra training images: {len(FEEDBACK_CLASSES)} from " in text
    # Three of each class's four images for training, and the exported ones; validation as before.
    classes = sum(1 for p in (data_dir / "ucmerced").iterdir() if p.is_dir())
    assert f"{classes} classes, {3 * classes + len(FEEDBACK_CLASSES)} training and {classes} validation images" in text
