"""Large uploads are parsed in memory (no temporary file) and still classified."""

from __future__ import annotations

import io

import numpy as np
from flask import request
from PIL import Image


def noisy_png(size=(800, 800)) -> bytes:
    """About 1.9 MB: random pixels do not compress, so the part is over werkzeug's 500 KB."""
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_large_file_part_stays_in_memory(app):
    data = noisy_png()
    assert len(data) > 1024 * 1024
    with app.test_request_context("/predict", method="POST", data={"file": (io.BytesIO(data), "big.png")},
                                  content_type="multipart/form-data"):
        upload = request.files["file"]
        assert isinstance(upload.stream, io.BytesIO)
        assert upload.read() == data


def test_a_large_upload_is_classified(client):
    response = client.post("/predict", data={"file": (io.BytesIO(noisy_png()), "big.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 200
    assert response.get_json()["label"] in {"red", "green", "blue"}
