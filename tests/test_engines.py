"""What runs the forward pass: ONNX Runtime on a verified ONNX copy, else TorchScript.

How the copy is verified, and that the lean path never imports torch: tests/test_verified_copy.py.
"""

from __future__ import annotations

import logging
import shutil

import pytest

from app import create_app
from classifier.errors import ModelContractError
from classifier.pipeline import Classifier

from testing import ROOT
from testing.samples import image_bytes

RED, GREEN, BLUE = (image_bytes("PNG", colour=c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)])


def test_auto_serves_a_verified_onnx_copy_with_the_same_answers(tiny_model_path, tiny_onnx):
    onnx = Classifier.setup(tiny_model_path, threads=1, engine="auto", onnx_path=tiny_onnx)
    torchscript = Classifier.setup(tiny_model_path, threads=1, engine="torchscript")
    assert onnx.engine.name == "onnxruntime" and torchscript.engine.name == "torchscript"
    for data, label in [(RED, "red"), (GREEN, "green"), (BLUE, "blue")]:
        got, expected = onnx.classify(data, top_k=3), torchscript.classify(data, top_k=3)
        assert got.top[0][0] == label
        assert [name for name, _ in got.top] == [name for name, _ in expected.top]
        assert max(abs(a - b) for (_, a), (_, b) in zip(got.top, expected.top)) < 1e-5


def test_an_onnx_served_worker_holds_no_idle_memory(tiny_model_path, tiny_onnx):
    classifier = Classifier.setup(tiny_model_path, threads=1, engine="auto", onnx_path=tiny_onnx)
    assert classifier.model.module is None  # the TorchScript file was checked in another process
    assert classifier.engine.session.get_session_options().enable_cpu_mem_arena is False
    kept = Classifier.setup(tiny_model_path, threads=1, engine="auto", onnx_path=None)
    assert kept.model.module is not None  # the one that answers is kept


def test_onnx_engine_takes_any_batch_size(tiny_model_path, tiny_onnx):
    classifier = Classifier.setup(tiny_model_path, threads=1, engine="onnxruntime", onnx_path=tiny_onnx)
    results = classifier.classify_many([RED, b"not an image", BLUE, GREEN])
    assert [getattr(r, "top", [[None]])[0][0] for r in results] == ["red", None, "blue", "green"]


@pytest.mark.parametrize("case", ["missing", "other model", "impostor", "not configured"])
def test_auto_falls_back_to_torchscript_and_says_why(case, tiny_model_path, tiny_model_v2_path, tiny_onnx,
                                                     impostor_onnx, tmp_path, caplog):
    served, onnx_path = tiny_model_path, tiny_onnx
    if case == "missing":
        onnx_path = tmp_path / "nowhere.onnx"
    elif case == "other model":
        served = tiny_model_v2_path
    elif case == "impostor":
        onnx_path = impostor_onnx
    elif case == "not configured":
        onnx_path = None
    with caplog.at_level(logging.INFO, logger="classifier.pipeline"):
        classifier = Classifier.setup(served, threads=1, engine="auto", onnx_path=onnx_path)
    assert classifier.engine.name == "torchscript"
    reason = {"missing": "does not exist", "other model": "another model", "impostor": "disagrees",
              "not configured": "ONNX_MODEL_PATH is empty"}[case]
    assert reason in caplog.text and reason in classifier.engine_reason
    assert classifier.classify(RED).top[0][0] == "red"


def test_onnxruntime_insists_and_stops_start_up_with_the_reason(tiny_model_path, impostor_onnx, tmp_path):
    with pytest.raises(ModelContractError, match="INFERENCE_ENGINE=onnxruntime, but .*disagrees"):
        Classifier.setup(tiny_model_path, threads=1, engine="onnxruntime", onnx_path=impostor_onnx)
    with pytest.raises(ModelContractError, match="does not exist"):
        Classifier.setup(tiny_model_path, threads=1, engine="onnxruntime", onnx_path=tmp_path / "x.onnx")


def test_torchscript_is_kept_when_asked_for_even_with_a_copy(tiny_model_path, tiny_onnx):
    classifier = Classifier.setup(tiny_model_path, threads=1, engine="torchscript", onnx_path=tiny_onnx)
    assert classifier.engine.name == "torchscript"
    assert classifier.engine_reason == "INFERENCE_ENGINE=torchscript"
    with pytest.raises(ValueError, match="INFERENCE_ENGINE must be one of"):
        Classifier.setup(tiny_model_path, threads=1, engine="tensorrt", onnx_path=tiny_onnx)


def test_a_copy_that_goes_stale_after_a_model_swap_is_not_served(tiny_model_v2_path, tiny_onnx, tmp_path):
    # swap-model replaces MODEL_PATH's bytes; the ONNX copy beside it was made from the old.
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_v2_path, served)
    classifier = Classifier.setup(served, threads=1, engine="auto", onnx_path=tiny_onnx)
    assert classifier.engine.name == "torchscript"


def test_health_and_model_say_which_engine_serves(tiny_model_path, tiny_onnx):
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                      "ONNX_MODEL_PATH": str(tiny_onnx)})
    client = app.test_client()
    health = client.get("/health").get_json()
    assert health["engine"] == "onnxruntime" and "answers as tiny.zip does" in health["engine_reason"]
    assert client.get("/model").get_json()["engine"] == "onnxruntime"
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                      "ONNX_MODEL_PATH": str(tiny_onnx), "INFERENCE_ENGINE": "torchscript"})
    health = app.test_client().get("/health").get_json()
    assert health["engine"] == "torchscript" and health["engine_reason"] == "INFERENCE_ENGINE=torchscript"


def test_an_unknown_engine_setting_stops_start_up(tiny_model_path):
    with pytest.raises(ValueError, match="INFERENCE_ENGINE"):
        create_app({"MODEL_PATH": str(tiny_model_path), "INFERENCE_ENGINE": "gpu"})


def test_the_shipped_model_is_served_by_onnx_runtime_with_torchscripts_answers(dataset_jpeg):
    # model.onnx beside model.zip is what `make variants` made from it; if it goes stale
    # (a new model.zip without a new copy) this fails, as the service would run slower.
    served = Classifier.setup(ROOT / "model.zip", threads=1, engine="auto", onnx_path=ROOT / "model.onnx")
    reference = Classifier.setup(ROOT / "model.zip", threads=1, engine="torchscript")
    assert served.engine.name == "onnxruntime"
    data = dataset_jpeg.read_bytes()
    got, expected = served.classify(data, top_k=16), reference.classify(data, top_k=16)
    assert got.top[0][0] == expected.top[0][0]  # whatever the shipped model's classes
    assert max(abs(dict(got.top)[k] - v) for k, v in expected.top) < 1e-4
