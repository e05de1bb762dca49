"""What runs the forward pass, and why: ONNX Runtime on a verified ONNX copy, else TorchScript.

The choice is classifier/onnx_copy.py's.

The copy's manifest and the evidence it records: tests/test_onnx_copy.py. The whole server's
processes, none with torch: tests/test_lean_server.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from classifier import onnx_copy
from classifier.errors import ModelContractError, OnnxCopyUnavailable
from classifier.onnx_copy import manifest_path
from classifier.pipeline import Classifier

from testing import ROOT
from testing.samples import TINY_LABELS, image_bytes

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
    assert classifier.model.module is None  # torch never loaded it: the evidence was recorded with the copy
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
    with caplog.at_level(logging.INFO, logger="classifier.onnx_copy"):
        classifier = Classifier.setup(served, threads=1, engine="auto", onnx_path=onnx_path)
    assert classifier.engine.name == "torchscript"
    reason = {"missing": "does not exist", "other model": "another model", "impostor": "disagrees",
              "not configured": "ONNX_MODEL_PATH is empty"}[case]
    assert reason in caplog.text and reason in classifier.engine_reason
    assert classifier.classify(RED).top[0][0] == "red"


def test_onnxruntime_insists_and_stops_start_up_with_the_reason(tiny_model_path, tiny_model_v2_path,
                                                                tiny_onnx, impostor_onnx, tmp_path):
    with pytest.raises(ModelContractError, match="INFERENCE_ENGINE=onnxruntime, but .*disagrees"):
        Classifier.setup(tiny_model_path, threads=1, engine="onnxruntime", onnx_path=impostor_onnx)
    with pytest.raises(ModelContractError, match="does not exist"):
        Classifier.setup(tiny_model_path, threads=1, engine="onnxruntime", onnx_path=tmp_path / "x.onnx")
    with pytest.raises(ModelContractError, match="INFERENCE_ENGINE=onnxruntime, but .*another model"):
        Classifier.setup(tiny_model_v2_path, threads=1, engine="onnxruntime", onnx_path=tiny_onnx)


# Not conftest, which imports torch: testing.samples does not. Any subprocess fails the test.
LEAN_PROCESS = """
import json, subprocess, sys
def no_subprocess(*args, **kwargs):
    raise AssertionError(f"a subprocess was started: {args}")
subprocess.Popen = no_subprocess
from classifier.pipeline import Classifier
from testing.samples import image_bytes
classifier = Classifier.setup(sys.argv[1], threads=1, engine="auto", onnx_path=sys.argv[2])
red = classifier.classify(image_bytes("PNG", colour=(255, 0, 0), size=(640, 480)))
batch = classifier.classify_many([image_bytes("JPEG", colour=(0, 0, 255))] * 6 + [b"not an image"])
print(json.dumps({"engine": classifier.engine.name, "red": red.top[0][0], "labels": list(classifier.labels),
                  "batch": [getattr(r, "top", [["error"]])[0][0] for r in batch],
                  "torch_imported": "torch" in sys.modules}))
"""


def test_a_verified_copy_is_served_without_torch_and_without_another_process(tiny_model_path, tiny_onnx):
    done = subprocess.run([sys.executable, "-c", LEAN_PROCESS, str(tiny_model_path), str(tiny_onnx)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "engine": "onnxruntime", "red": "red", "labels": TINY_LABELS, "batch": ["blue"] * 6 + ["error"],
        "torch_imported": False}


def test_a_copy_of_another_model_is_refused_before_onnx_runtime_loads_it(tiny_model_v2_path, tiny_onnx,
                                                                         monkeypatch):
    monkeypatch.setattr(onnx_copy, "OnnxRuntimeEngine", lambda *args: pytest.fail("ONNX Runtime loaded it"))
    with pytest.raises(OnnxCopyUnavailable, match="another model"):
        onnx_copy.serve_onnx_copy(tiny_model_v2_path, tiny_onnx, threads=1)


def test_the_reference_answers_are_the_model_files_own_where_it_has_them(tiny_model_path, tiny_onnx,
                                                                         impostor_onnx):
    served = Classifier.setup(tiny_model_path, threads=1, engine="auto", onnx_path=tiny_onnx)
    assert "TorchScript answers in tiny.zip's meta.json" in served.engine_reason
    # The impostor's evidence is its own network's, and true of it: the model file's record refutes it.
    evidence = json.loads(manifest_path(impostor_onnx).read_text())["evidence"]
    assert evidence["max_difference"] <= onnx_copy.AGREEMENT_TOLERANCE
    with pytest.raises(OnnxCopyUnavailable, match="disagrees with the TorchScript answers in tiny.zip's"):
        onnx_copy.serve_onnx_copy(tiny_model_path, impostor_onnx, threads=1)


def forged(onnx_path, tmp_path, change) -> str:
    """A copy of ``onnx_path`` whose manifest was edited by ``change``, in a folder of its own."""
    folder = tmp_path / change.__name__
    folder.mkdir()
    copy = folder / onnx_path.name
    shutil.copyfile(onnx_path, copy)
    manifest = json.loads(manifest_path(onnx_path).read_text())
    change(manifest)
    manifest_path(copy).write_text(json.dumps(manifest))
    return str(copy)


def test_without_the_model_files_record_the_manifests_evidence_is_the_reference(unrecorded_model, tmp_path):
    model, onnx = unrecorded_model
    served = Classifier.setup(model, threads=1, engine="onnxruntime", onnx_path=onnx)
    assert "TorchScript answers in model.onnx.json's evidence" in served.engine_reason
    assert served.classify(RED).top[0][0] == "red"

    def shifted(manifest):  # the recorded answers are not what this copy answers
        manifest["evidence"]["smoke_answers"]["probabilities"][0][0] += 1e-3

    def without_evidence(manifest):  # a manifest written before it recorded any
        del manifest["evidence"]

    with pytest.raises(ModelContractError, match="onnxruntime, but .*disagrees with the TorchScript answers"):
        Classifier.setup(model, threads=1, engine="onnxruntime", onnx_path=forged(onnx, tmp_path, shifted))
    auto = Classifier.setup(model, threads=1, engine="auto",
                            onnx_path=forged(onnx, tmp_path, without_evidence))
    assert auto.engine.name == "torchscript" and "records no TorchScript answers" in auto.engine_reason


def test_a_manifest_with_other_labels_is_refused(tiny_model_path, tiny_onnx, tmp_path):
    def relabelled(manifest):
        manifest["labels"] = ["blue", "green", "red"]

    with pytest.raises(ModelContractError, match="lists other labels than tiny.zip's meta.json"):
        Classifier.setup(tiny_model_path, threads=1, engine="onnxruntime",
                         onnx_path=forged(tiny_onnx, tmp_path, relabelled))


def test_a_copy_onnx_runtime_cannot_load_is_refused_with_its_reason(tiny_model_path, tiny_onnx, tmp_path):
    junk = b"not an ONNX file"

    def describes_junk(manifest):
        manifest["sha256"] = hashlib.sha256(junk).hexdigest()

    copy = Path(forged(tiny_onnx, tmp_path, describes_junk))
    copy.write_bytes(junk)
    auto = Classifier.setup(tiny_model_path, threads=1, engine="auto", onnx_path=copy)
    assert auto.engine.name == "torchscript" and "ONNX Runtime cannot load" in auto.engine_reason


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
    model = client.get("/model").get_json()
    assert model["engine"] == "onnxruntime" and "smoke_answers" not in model  # evidence, not a description
    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "TORCH_THREADS": 1,
                      "ONNX_MODEL_PATH": str(tiny_onnx), "INFERENCE_ENGINE": "torchscript"})
    health = app.test_client().get("/health").get_json()
    assert health["engine"] == "torchscript" and health["engine_reason"] == "INFERENCE_ENGINE=torchscript"


@pytest.mark.parametrize("copy, engine, reason", [
    ("tiny_onnx", "onnxruntime", "tiny.onnx answers as tiny.zip does"),
    ("impostor_onnx", "torchscript", "disagrees"),
])
def test_check_model_applies_the_workers_choice_and_says_it(request, tiny_model_path, copy, engine, reason):
    app = create_app({"TESTING": True, "LOAD_MODEL": False, "MODEL_PATH": str(tiny_model_path),
                      "TORCH_THREADS": 1, "ONNX_MODEL_PATH": str(request.getfixturevalue(copy))})
    result = app.test_cli_runner().invoke(args=["check-model", str(tiny_model_path)])
    assert result.exit_code == 0, result.output
    assert f"workers would serve it with {engine} (" in result.output and reason in result.output


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
