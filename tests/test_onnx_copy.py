"""The ONNX copy of the model: exported, described with its evidence, offered to browsers while it matches.

``classifier.onnx_copy`` writes the manifest and decides whether ``model.onnx`` may be handed
to browsers; ``web/device.py`` serves it. A copy made from another model file is refused with
a reason. Whether the server runs it: tests/test_engines.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from app import create_app
from classifier.onnx_copy import AGREEMENT_TOLERANCE, file_sha256, manifest_path, matching_onnx_copy
from classifier.errors import OnnxCopyUnavailable
from classifier.model import SMOKE_ANSWERS, load_model, smoke_batch
from training.onnx_variants import write_manifest

from testing.samples import TINY_LABELS


def test_onnx_copy_computes_what_the_torchscript_file_computes(tiny_model_path, tiny_onnx):
    batch = torch.rand(5, 3, 224, 224)
    batch[0, 0] += 1  # a red-ish image among random ones
    with torch.inference_mode():
        expected = load_model(tiny_model_path).module(batch).numpy()
    session = onnxruntime.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": batch.numpy()})[0]  # any batch size: the axis is dynamic
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_onnx_copy_carries_labels_and_meta_and_a_manifest(tiny_model_path, tiny_onnx):
    properties = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    assert json.loads(properties["labels"]) == TINY_LABELS
    assert json.loads(properties["meta.json"])["name"] == "tiny-colours"
    manifest = json.loads(manifest_path(tiny_onnx).read_text())
    assert manifest["labels"] == TINY_LABELS and manifest["file"] == tiny_onnx.name
    assert manifest["bytes"] == tiny_onnx.stat().st_size
    assert manifest["source"] == {"file": tiny_model_path.name, "sha256": file_sha256(tiny_model_path)}


def test_the_manifest_records_the_evidence_a_worker_checks(tiny_model_path, tiny_onnx):
    evidence = json.loads(manifest_path(tiny_onnx).read_text())["evidence"]
    model = load_model(tiny_model_path)
    with torch.inference_mode():  # the TorchScript model's own answers on the smoke batch
        expected = torch.softmax(model.module(torch.from_numpy(smoke_batch())), dim=1).numpy()
    assert evidence[SMOKE_ANSWERS]["labels"] == TINY_LABELS
    np.testing.assert_allclose(evidence[SMOKE_ANSWERS]["probabilities"], expected, atol=1e-6)
    recorded = model.meta[SMOKE_ANSWERS]  # what the model file recorded of itself when it was exported
    assert recorded["labels"] == TINY_LABELS
    np.testing.assert_allclose(evidence[SMOKE_ANSWERS]["probabilities"], recorded["probabilities"], atol=1e-6)
    assert 0 <= evidence["max_difference"] <= evidence["tolerance"] == AGREEMENT_TOLERANCE
    assert set(evidence["versions"]) == {"torch", "onnxruntime"} and all(evidence["versions"].values())


def test_a_copy_without_the_models_answers_gets_no_manifest(tiny_model_path, impostor_onnx, tmp_path):
    other = tmp_path / "other.onnx"
    shutil.copy(impostor_onnx, other)
    with pytest.raises(OnnxCopyUnavailable, match="disagrees"):
        write_manifest(other, load_model(tiny_model_path))
    assert not manifest_path(other).exists()


def test_the_copy_is_offered_while_it_matches_the_served_model(tiny_model_path, tiny_onnx):
    assert matching_onnx_copy(tiny_onnx, tiny_model_path).manifest["labels"] == TINY_LABELS


def test_a_copy_of_another_model_is_refused(tiny_model_v2_path, tiny_onnx):
    with pytest.raises(OnnxCopyUnavailable, match="exported from another model"):
        matching_onnx_copy(tiny_onnx, tiny_model_v2_path)


def test_a_copy_that_is_not_the_file_its_manifest_describes_is_refused(tiny_model_path, tiny_onnx, tmp_path):
    copy = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx, copy)
    shutil.copy(manifest_path(tiny_onnx), manifest_path(copy))
    assert matching_onnx_copy(copy, tiny_model_path)
    with open(copy, "ab") as handle:  # changed after its manifest was written
        handle.write(b"\0")
    with pytest.raises(OnnxCopyUnavailable, match="not the file"):
        matching_onnx_copy(copy, tiny_model_path)
    manifest_path(copy).unlink()
    with pytest.raises(OnnxCopyUnavailable, match="does not exist"):
        matching_onnx_copy(copy, tiny_model_path)


def device_app(model_path, onnx_path):
    return create_app({"TESTING": True, "LOAD_MODEL": False, "MODEL_PATH": str(model_path), "DEVICE_MODEL_PATH": str(onnx_path)})


def test_the_app_serves_the_manifest_and_the_file_with_an_etag(tiny_model_path, tiny_onnx):
    client = device_app(tiny_model_path, tiny_onnx).test_client()
    manifest = client.get("/model.onnx.json")
    assert manifest.status_code == 200 and manifest.json["labels"] == TINY_LABELS
    assert manifest.json["url"] == "/model.onnx"
    response = client.get("/model.onnx")
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    assert response.data == tiny_onnx.read_bytes()
    assert response.headers["ETag"].strip('"') == manifest.json["sha256"]
    again = client.get("/model.onnx", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304  # a browser downloads it again only when it changed
    page = client.get("/").get_data(as_text=True)
    assert 'data-device-manifest="/model.onnx.json"' in page


def test_the_app_refuses_a_stale_copy_in_words(tiny_model_v2_path, tiny_onnx):
    client = device_app(tiny_model_v2_path, tiny_onnx).test_client()
    for url in ("/model.onnx.json", "/model.onnx"):
        response = client.get(url)
        assert response.status_code == 404
        assert response.json["error"]["code"] == "device_model_unavailable"
        assert "python -m training.variants" in response.json["error"]["message"]


def test_an_empty_device_model_path_turns_the_path_off(tiny_model_path):
    client = device_app(tiny_model_path, "").test_client()
    assert client.get("/model.onnx.json").status_code == 404
    assert "data-device-manifest" not in client.get("/").get_data(as_text=True)


def test_the_page_may_compile_webassembly_and_nothing_else_is_loosened(client):
    policy = client.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in policy
    assert "'unsafe-eval'" not in policy.replace("'wasm-unsafe-eval'", "")
    assert "'unsafe-inline'" not in policy
