"""Fixtures shared by the tests: tiny model files, apps built from them, the data-set images,
Chromium. What the fixtures are made of, and what benchmarks share with the tests, is in testing/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from app import create_app
from classifier.onnx_copy import file_sha256, manifest_path
from training.export import export_model
from classifier.model import SMOKE_ANSWERS, read_meta
from training.onnx_variants import export_onnx

from testing.samples import DATA_DIR, TINY_LABELS, colour_network, export_tiny_model

from .standalone import install_guard

install_guard()



@pytest.fixture(scope="session", autouse=True)
def monitoring_database(tmp_path_factory):
    """Every app and server the suite starts records its predictions in a database of the
    suite's own (web/db.py), never the repository's instance/ folder or a DATABASE_URL
    from the shell. Tests that need another database pass their own."""
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('monitoring') / 'monitoring.sqlite'}"
    yield os.environ["DATABASE_URL"]
    if saved is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = saved


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("models") / "tiny.zip")


@pytest.fixture(scope="session")
def tiny_model_v2_path(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("models") / "tiny-v2.zip", version="0.0.2")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model_path, tmp_path_factory):
    return export_onnx(tiny_model_path, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def impostor_onnx(tiny_model_path, tmp_path_factory):
    """Another network's ONNX file (red scored as blue), whose manifest was edited to name the tiny model.

    Its evidence is the other network's own, so it holds up against the manifest alone: the
    tiny model's meta.json, which records the tiny model's answers, gives it away.
    """
    folder = tmp_path_factory.mktemp("impostor")
    network = colour_network()
    with torch.no_grad():
        network[2].weight.copy_(torch.eye(3).flip(0) * 20.0)
    other = export_model(network, TINY_LABELS, {"name": "other"}, folder / "other.zip", mean=(0, 0, 0), std=(1, 1, 1))
    path = export_onnx(other, folder / "tiny.onnx")
    manifest = json.loads(manifest_path(path).read_text())
    manifest["source"]["sha256"] = file_sha256(tiny_model_path)
    manifest["sha256"] = file_sha256(path)
    manifest_path(path).write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="session")
def unrecorded_model(tiny_model_path, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny model as a file exported before meta.json recorded its answers (as the shipped
    model.zip was), and its ONNX copy: the manifest's evidence is the only reference."""
    folder = tmp_path_factory.mktemp("unrecorded")
    meta = {key: value for key, value in read_meta(tiny_model_path).items() if key != SMOKE_ANSWERS}
    path = folder / "model.zip"
    module = torch.jit.load(str(tiny_model_path))
    torch.jit.save(module, str(path), _extra_files={"meta.json": json.dumps(meta)})
    return path, export_onnx(path, folder / "model.onnx")


@pytest.fixture(scope="session")
def corrupt_model_path(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny model cut in half, as an interrupted copy would leave it."""
    path = tmp_path_factory.mktemp("models") / "corrupt.zip"
    data = tiny_model_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def wrong_contract_model_path(tmp_path_factory) -> Path:
    """A valid TorchScript file with two labels for its three outputs."""
    return export_tiny_model(tmp_path_factory.mktemp("models") / "wrong.zip", labels=["red", "green"])


@pytest.fixture
def app(tiny_model_path):
    return create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The fixture images, laid out as the data set is: ``ucmerced/<class>/*.jpg``, ``ucmerced-tif/``."""
    return DATA_DIR


@pytest.fixture(scope="session")
def dataset_jpeg(data_dir) -> Path:
    return data_dir / "ucmerced" / "airplane" / "airplane00.jpg"


@pytest.fixture(scope="session")
def dataset_tiff(data_dir) -> Path:
    return data_dir / "ucmerced-tif" / "beach00.tif"


@pytest.fixture(scope="module")
def browser():
    """Chromium, for the browser tests (testing/browser.py)."""
    from testing.browser import chromium

    with chromium() as browser:
        yield browser
