"""One model, one set of answers: the lean path (ONNX Runtime, no torch) and TorchScript, through the API.

The shipped model.zip and its ONNX copy, on the data set's images: the same top-k labels and
probabilities within 1e-5, from POST /predict and POST /predict/batch of both apps.
"""

from __future__ import annotations

import io

import pytest

from app import create_app
from web import served_model

from testing import ROOT
from testing.samples import dataset_jpegs, model_answer

TOLERANCE = 1e-5


def shipped_app(engine: str):
    return create_app({"TESTING": True, "MODEL_PATH": str(ROOT / "model.zip"), "ONNX_MODEL_PATH": str(ROOT / "model.onnx"),
                       "INFERENCE_ENGINE": engine, "TORCH_THREADS": 1})


@pytest.fixture(scope="module")
def clients():
    lean, torchscript = shipped_app("onnxruntime"), shipped_app("torchscript")
    assert lean.extensions[served_model.EXTENSION_KEY].model.module is None  # nothing of torch's in the lean app
    return lean.test_client(), torchscript.test_client()


@pytest.fixture(scope="module")
def dataset_images(data_dir):
    return dataset_jpegs(data_dir / "ucmerced", per_class=4)


def assert_same_answer(lean: dict, torchscript: dict, what) -> None:
    assert [t["label"] for t in lean["top"]] == [t["label"] for t in torchscript["top"]], what
    assert lean["label"] == torchscript["label"], what
    for a, b in zip(lean["top"], torchscript["top"]):
        assert abs(a["score"] - b["score"]) <= TOLERANCE, (what, a, b)


def test_health_says_which_path_serves(clients):
    lean, torchscript = (client.get("/health").get_json() for client in clients)
    assert lean["engine"] == "onnxruntime" and "answers as model.zip does" in lean["engine_reason"]
    assert torchscript["engine"] == "torchscript"
    assert (lean["model"], lean["version"]) == (torchscript["model"], torchscript["version"])
    assert clients[0].get("/model").get_json()["labels"] == clients[1].get("/model").get_json()["labels"]


def test_predict_gives_the_same_answers_on_the_data_set(clients, dataset_images):
    assert len(dataset_images) >= 16 * 3
    right = 0
    for image in dataset_images:  # the default top: five classes, or all of fewer
        answers = [client.post("/predict", data={"file": (io.BytesIO(image.read_bytes()), image.name)}).get_json()
                   for client in clients]
        assert_same_answer(*answers, image.name)
        right += answers[0]["label"] == model_answer(image)["label"]
    assert right == len(dataset_images)  # and they are the model's answers, not noise


def test_predict_batch_gives_the_same_answers_as_predict(clients, dataset_images):
    images = dataset_images[:16]  # the first of each class, a full batch
    def form():  # the test client reads each file object once
        return {"file": [(io.BytesIO(image.read_bytes()), image.name) for image in images]}

    top = min(3, len(clients[0].get("/model").get_json()["labels"]))  # whatever the shipped model's classes
    lean, torchscript = (client.post(f"/predict/batch?top={top}", data=form(),
                                     content_type="multipart/form-data").get_json() for client in clients)
    for image, a, b in zip(images, lean["results"], torchscript["results"], strict=True):
        assert_same_answer(a, b, image.name)
        single = clients[0].post(f"/predict?top={top}",
                                 data={"file": (io.BytesIO(image.read_bytes()), image.name)}).get_json()
        assert_same_answer(a, single, image.name)
