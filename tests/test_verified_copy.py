"""The ONNX copy checked once against model.zip, in a process that exits; served after without torch.

The server's own processes (gunicorn's master and workers) are looked at in
tests/test_lean_server.py; here, the check, its record and the lean path in one process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from classifier import verified_copy
from classifier.errors import ModelContractError
from classifier.onnx_copy import file_sha256
from classifier.pipeline import Classifier
from classifier.verified_copy import CheckStore, check_once, engine_versions
from web import serving_check

from testing import ROOT
from testing.samples import TINY_LABELS, image_bytes

RED = image_bytes("PNG", colour=(255, 0, 0))


@pytest.fixture
def store(tmp_path) -> CheckStore:
    return CheckStore(tmp_path / "checks")


# Not conftest, which imports torch: testing.samples does not.
LEAN_PROCESS = """
import json, sys
from classifier.pipeline import Classifier
from testing.samples import image_bytes
classifier = Classifier.setup(sys.argv[1], threads=1, engine="auto", onnx_path=sys.argv[2], check_store=sys.argv[3])
red = classifier.classify(image_bytes("PNG", colour=(255, 0, 0), size=(640, 480)))
batch = classifier.classify_many([image_bytes("JPEG", colour=(0, 0, 255))] * 6 + [b"not an image"])
print(json.dumps({"engine": classifier.engine.name, "red": red.top[0][0], "labels": list(classifier.labels),
                  "batch": [getattr(r, "top", [["error"]])[0][0] for r in batch],
                  "torch_imported": "torch" in sys.modules}))
"""


def run_lean_process(model, onnx, store: CheckStore) -> dict:
    done = subprocess.run([sys.executable, "-c", LEAN_PROCESS, str(model), str(onnx), str(store.directory)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_verified_copy_is_served_without_torch_in_the_serving_process(tiny_model_path, tiny_onnx, store):
    first = run_lean_process(tiny_model_path, tiny_onnx, store)  # checks in a subprocess, then serves
    assert first == {"engine": "onnxruntime", "red": "red", "labels": TINY_LABELS,
                     "batch": ["blue"] * 6 + ["error"], "torch_imported": False}
    record = store.path_for(file_sha256(tiny_model_path), file_sha256(tiny_onnx))
    assert json.loads(record.read_text())["verdict"] == "verified"
    checked_at = record.stat().st_mtime_ns
    assert run_lean_process(tiny_model_path, tiny_onnx, store) == first
    assert record.stat().st_mtime_ns == checked_at  # the second process found the record: no check


def test_the_record_is_bound_to_both_files_and_the_engines(tiny_model_path, tiny_onnx, store):
    check = check_once(tiny_model_path, tiny_onnx, store)
    model_sha, onnx_sha = file_sha256(tiny_model_path), file_sha256(tiny_onnx)
    assert check.verified and (check.model_sha256, check.onnx_sha256) == (model_sha, onnx_sha)
    assert check.labels == tuple(TINY_LABELS) and check.meta["name"] == "tiny-colours"
    assert check.max_difference <= verified_copy.AGREEMENT_TOLERANCE
    assert store.find(model_sha, onnx_sha) == check
    assert store.find(model_sha, "0" * 64) is None and store.find("0" * 64, onnx_sha) is None
    # A record whose contents name other bytes than its file name, or other engines, is no record.
    path = store.path_for(model_sha, onnx_sha)
    for change in ({"onnx_sha256": "0" * 64}, {"versions": {**engine_versions(), "onnxruntime": "0.0.1"}}):
        path.write_text(json.dumps({**check.to_json(), **change}))
        assert store.find(model_sha, onnx_sha) is None, change


def test_an_impostor_copy_is_refused_and_the_refusal_recorded(tiny_model_path, impostor_onnx, store, caplog):
    check = check_once(tiny_model_path, impostor_onnx, store)
    assert not check.verified and "disagrees" in check.reason
    auto = Classifier.setup(tiny_model_path, threads=1, engine="auto", onnx_path=impostor_onnx, check_store=store.directory)
    assert auto.engine.name == "torchscript" and "disagrees" in auto.engine_reason
    assert auto.classify(RED).top[0][0] == "red"
    with pytest.raises(ModelContractError, match="INFERENCE_ENGINE=onnxruntime, but .*disagrees"):
        Classifier.setup(tiny_model_path, threads=1, engine="onnxruntime", onnx_path=impostor_onnx,
                         check_store=store.directory)


def test_reuse_takes_the_record_and_a_fresh_check_runs_again(tiny_model_path, tiny_onnx, store, monkeypatch):
    check_once(tiny_model_path, tiny_onnx, store)
    calls = []
    real = verified_copy.check_copy
    monkeypatch.setattr(verified_copy, "check_copy", lambda *args: calls.append(args) or real(*args))
    assert check_once(tiny_model_path, tiny_onnx, store, reuse=True).verified and calls == []
    assert check_once(tiny_model_path, tiny_onnx, store, reuse=False).verified and len(calls) == 1


def test_a_copy_of_another_model_is_refused_before_any_check(tiny_model_v2_path, tiny_onnx, store, monkeypatch):
    monkeypatch.setattr(verified_copy, "check_copy", lambda *args: pytest.fail("torch's check ran"))
    with pytest.raises(verified_copy.OnnxCopyUnavailable, match="another model"):
        check_once(tiny_model_v2_path, tiny_onnx, store)


def test_the_check_command_says_each_verdict_with_its_exit_status(tiny_model_path, tiny_model_v2_path, tiny_onnx,
                                                                   impostor_onnx, corrupt_model_path, store):
    def check(model, onnx):
        return subprocess.run([sys.executable, "-m", "classifier.verified_copy", "--model", str(model),
                               "--onnx", str(onnx), "--store", str(store.directory)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    verified = check(tiny_model_path, tiny_onnx)
    assert verified.returncode == 0 and json.loads(verified.stdout)["verdict"] == "verified"
    disagrees = check(tiny_model_path, impostor_onnx)
    assert disagrees.returncode == 3 and "disagrees" in json.loads(disagrees.stdout)["reason"]
    stale = check(tiny_model_v2_path, tiny_onnx)
    assert stale.returncode == 3 and "another model" in stale.stderr
    cut = check(corrupt_model_path, tiny_onnx)  # half a file is not the model the copy names
    assert cut.returncode == 3 and "another model" in cut.stderr


@pytest.mark.parametrize("engine, expected_status, words", [
    ("torchscript", 0, "INFERENCE_ENGINE=torchscript"),
    ("auto", 0, "with TorchScript: "),
    ("onnxruntime", 1, "INFERENCE_ENGINE=onnxruntime, but"),
])
def test_the_masters_check_with_a_stale_copy(engine, expected_status, words, tiny_model_v2_path, tiny_onnx, tmp_path,
                                             monkeypatch, capsys):
    """What gunicorn's master runs before forking: the server's settings, from the environment."""
    for name, value in {"INFERENCE_ENGINE": engine, "MODEL_PATH": str(tiny_model_v2_path),
                        "ONNX_MODEL_PATH": str(tiny_onnx), "VERIFIED_COPIES_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    assert serving_check.main([]) == expected_status
    said = capsys.readouterr()
    assert words in said.out + said.err
    if engine != "torchscript":
        assert "another model" in said.out + said.err


def test_the_masters_check_with_a_good_copy_records_it_for_the_workers(tiny_model_path, tiny_onnx, tmp_path, monkeypatch):
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_path, served)
    for name, value in {"INFERENCE_ENGINE": "onnxruntime", "MODEL_PATH": str(served),
                        "ONNX_MODEL_PATH": str(tiny_onnx), "VERIFIED_COPIES_DIR": str(tmp_path / "checks")}.items():
        monkeypatch.setenv(name, value)
    ok, message = serving_check.run_check(reuse=False)  # as the hook runs it: a subprocess
    assert ok and "with ONNX Runtime, without torch" in message, message
    assert CheckStore(tmp_path / "checks").find(file_sha256(served), file_sha256(tiny_onnx)).verified
