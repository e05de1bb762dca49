"""Inputs made on the spot: images of one colour, odd files, image folders, and a tiny model
whose every answer is known in advance (a red image is "red"); and the shipped model's own
answers, for the tests that serve it."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

from PIL import Image

from . import ROOT

# A few real images of the data set, kept in the repository (tests/fixtures/README.md): the
# suite reads nothing outside it, so it passes on any clone.
DATA_DIR = ROOT / "tests" / "fixtures" / "data"
TINY_LABELS = ["red", "green", "blue"]
# The model the repository serves: the notebook's, trained on whatever classes its user chose.
SHIPPED_MODEL = ROOT / "model.zip"


def image_bytes(fmt: str = "PNG", mode: str = "RGB", size=(64, 48), colour=(255, 0, 0), **save) -> bytes:
    """An image of one colour, encoded in ``fmt``."""
    image = Image.new(mode, size, colour)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def dataset_jpegs(data_set: Path, per_class: int = 4) -> list[Path]:
    """The first ``per_class`` images of every class of ``data_set``, interleaved class by class
    (so the first of them are one of each class)."""
    from training.data_set import image_files

    classes = sorted(p for p in data_set.iterdir() if p.is_dir())
    columns = [image_files(c)[:per_class] for c in classes]
    return [column[i] for i in range(per_class) for column in columns if i < len(column)]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims the given size; its pixel data is garbage, so decoding would fail."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"junk") + chunk(b"IEND", b"")


def make_image_folder(root: Path, classes=("alpha", "beta", "gamma"), per_class=10, fmt="PNG", suffix=".png") -> Path:
    """A data set laid out as the notebook reads one: ``root/<class>/<class>NN<suffix>``, each
    class one colour (red, green, blue, then yellow, cyan, magenta)."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for n in range(per_class):
            colour = colours[index % len(colours)]
            (folder / f"{name}{n:02d}{suffix}").write_bytes(image_bytes(fmt, colour=colour, size=(40, 30)))
    return root


def colour_network():
    """Scores each class by how much of its colour channel the image holds.

    Predictions are known in advance (a red image is "red"), so tests can check answers.
    """
    import torch
    from torch import nn

    linear = nn.Linear(3, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(3) * 20.0)
        linear.bias.zero_()
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


def export_tiny_model(path: Path, version: str = "0.0.1", labels=TINY_LABELS) -> Path:
    """The colour model as a model file; ``labels`` of another length breaks the contract."""
    from training.export import export_model

    meta = {"name": "tiny-colours", "version": version, "dataset": "synthetic"}
    return export_model(colour_network(), labels, meta, path, mean=(0, 0, 0), std=(1, 1, 1))


@functools.lru_cache(maxsize=2)
def _reference_classifier(model_path: Path):
    from classifier.pipeline import Classifier

    return Classifier.setup(model_path, engine="torchscript")


def model_answer(image: Path | bytes, model_path: Path = SHIPPED_MODEL, top_k: int | None = None) -> dict:
    """The answer ``model_path`` gives for an image file (or its bytes), as ``POST /predict``
    puts it, computed in this process by the service's pipeline on the TorchScript file.

    What a server or a page serving that model must say: tests compare with it rather than
    name a class, so they hold for any model the notebook writes, whatever its classes.
    """
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return _reference_classifier(Path(model_path).resolve()).classify(data, top_k).to_json()
