"""Fixtures shared by the tests: a tiny model file, apps built from it, and images."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from app import create_app
from classifier.onnx_copy import file_sha256, manifest_path, model_identity
from classifier.export import export_model
from training.onnx_variants import export_onnx

from .standalone import install_guard

install_guard()

ROOT = Path(__file__).resolve().parents[1]
# A few real images of the data set, kept in the repository (tests/fixtures/README.md): the
# suite reads nothing outside it, so it passes on any clone.
DATA_DIR = ROOT / "tests" / "fixtures" / "data"
TINY_LABELS = ["red", "green", "blue"]


def colour_network() -> nn.Module:
    """Scores each class by how much of its colour channel the image holds.

    Predictions are known in advance (a red image is "red"), so tests can check answers.
    """
    linear = nn.Linear(3, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(3) * 20.0)
        linear.bias.zero_()
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


def export_tiny_model(path: Path, version: str = "0.0.1", labels=TINY_LABELS) -> Path:
    """The colour model as a model file; ``labels`` of another length breaks the contract."""
    meta = {"name": "tiny-colours", "version": version, "dataset": "synthetic"}
    return export_model(colour_network(), labels, meta, path, mean=(0, 0, 0), std=(1, 1, 1))


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
    """Another network's ONNX file (red scored as blue), whose manifest names the tiny model."""
    folder = tmp_path_factory.mktemp("impostor")
    network = colour_network()
    with torch.no_grad():
        network[2].weight.copy_(torch.eye(3).flip(0) * 20.0)
    other = export_model(network, TINY_LABELS, {"name": "other"}, folder / "other.zip", mean=(0, 0, 0), std=(1, 1, 1))
    path = export_onnx(other, folder / "tiny.onnx")
    manifest = json.loads(manifest_path(path).read_text())
    manifest["source"]["sha256"] = model_identity(tiny_model_path)
    manifest["sha256"] = file_sha256(path)
    manifest_path(path).write_text(json.dumps(manifest))
    return path


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


def image_bytes(fmt: str = "PNG", mode: str = "RGB", size=(64, 48), colour=(255, 0, 0), **save):
    """An image of one colour, encoded in ``fmt``."""
    image = Image.new(mode, size, colour)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


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
