"""The Open Inference Protocol (/v2): its metadata and health, infer in JSON and binary form,
its errors, hostile bodies, and the unmodified tritonclient against the real Procfile server."""

from __future__ import annotations

import base64
import io
import json
import struct
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tritonclient import http as triton_http

from app import create_app
from classifier.images import to_batch
from web.settings import read_settings

from testing import ROOT
from testing.samples import TINY_LABELS, dataset_jpegs, image_bytes, model_answer, png_header_only
from testing.servers import procfile_server

RED, GREEN = image_bytes("PNG", colour=(255, 0, 0)), image_bytes("JPEG", colour=(0, 255, 0))
HEADER = "Inference-Header-Content-Length"


@pytest.fixture
def model_name(client) -> str:
    return client.get("/health").get_json()["model"]


def infer_json(client, name: str, images: list[bytes], outputs=None, path=""):
    body = {"id": "r-1", "inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                                     "data": [base64.b64encode(image).decode() for image in images]}]}
    if outputs is not None:
        body["outputs"] = outputs
    return client.post(f"/v2/models/{name}{path}/infer", json=body)


def binary_body(header: dict, *tensors: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + b"".join(tensors), {HEADER: str(len(head))}


def bytes_tensor(images: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(image)) + image for image in images)


def split_binary(response) -> tuple[dict, bytes]:
    length = int(response.headers[HEADER])
    return json.loads(response.data[:length]), response.data[length:]


def predict_scores(client, image: bytes) -> dict[str, float]:
    body = client.post(f"/predict?top={len(TINY_LABELS)}", data=image, content_type="image/png").get_json()
    return {entry["label"]: entry["score"] for entry in body["top"]}


def test_server_and_model_metadata_health_and_config(client, model_name):
    assert client.get("/v2").get_json()["extensions"] == ["binary_tensor_data", "classification", "model_configuration"]
    assert client.get("/v2/health/live").status_code == client.get("/v2/health/ready").status_code == 200
    version = client.get("/health").get_json()["version"]
    for path in (f"/v2/models/{model_name}", f"/v2/models/{model_name}/versions/{version}"):
        metadata = client.get(path).get_json()
        assert metadata["versions"] == [version] and metadata["platform"] == "pytorch_libtorch"
        assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [("image", "BYTES"), ("pixels", "FP32")]
        assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(TINY_LABELS)]}]
        assert client.get(f"{path}/ready").status_code == 200
        config = client.get(f"{path}/config").get_json()
        assert config["max_batch_size"] == read_settings({})["MAX_BATCH_FILES"]
        assert config["output"][0]["dims"] == [len(TINY_LABELS)]


@pytest.mark.parametrize("path", ["/v2/models/no-such-model", "/v2/models/no-such-model/ready",
                                  "/v2/models/{name}/versions/9.9.9/ready", "/v2/models/{name}/versions/9.9.9/config"])
def test_another_model_or_version_is_404_in_the_protocols_shape(client, model_name, path):
    response = client.get(path.format(name=model_name))
    assert response.status_code == 404 and model_name in response.get_json()["error"]


def test_not_ready_while_the_model_loads(tiny_model_path):
    loading = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "LOAD_MODEL": False}).test_client()
    assert loading.get("/v2/health/live").status_code == 200
    response = loading.get("/v2/health/ready")
    assert response.status_code == 503 and isinstance(response.get_json()["error"], str)


def test_infer_in_json_answers_as_predict_does(client, model_name):
    response = infer_json(client, model_name, [RED, GREEN])
    assert response.status_code == 200 and response.headers["X-Model-Version"].startswith(model_name)
    body = response.get_json()
    assert body["id"] == "r-1" and body["model_name"] == model_name
    (output,) = body["outputs"]
    assert output["shape"] == [2, len(TINY_LABELS)] and output["datatype"] == "FP32"
    rows = np.asarray(output["data"]).reshape(2, -1)
    for row, image in zip(rows, (RED, GREEN)):
        assert dict(zip(TINY_LABELS, row)) == pytest.approx(predict_scores(client, image), abs=1e-6)


def test_classification_extension_gives_score_index_label(client, model_name):
    response = infer_json(client, model_name, [RED], [{"name": "probabilities", "parameters": {"classification": 2}}])
    (output,) = response.get_json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 2]
    score, index, label = output["data"][0].split(":")
    assert (label, int(index)) == ("red", TINY_LABELS.index("red"))
    assert float(score) == pytest.approx(predict_scores(client, RED)["red"], abs=1e-6)


def test_binary_bytes_in_and_binary_outputs_out(client, model_name):
    images = [RED, GREEN, RED]
    tensor = bytes_tensor(images)
    body, headers = binary_body({"inputs": [{"name": "image", "shape": [3, 1], "datatype": "BYTES",
                                             "parameters": {"binary_data_size": len(tensor)}}],
                                 "parameters": {"binary_data_output": True}}, tensor)
    response = client.post(f"/v2/models/{model_name}/infer", data=body, headers=headers)
    assert response.status_code == 200 and response.content_type == "application/octet-stream"
    header, data = split_binary(response)
    (output,) = header["outputs"]
    assert output["parameters"]["binary_data_size"] == len(data) and "data" not in output
    probabilities = np.frombuffer(data, "<f4").reshape(output["shape"])
    assert [TINY_LABELS[i] for i in probabilities.argmax(axis=1)] == ["red", "green", "red"]


def test_fp32_pixels_answer_as_the_image_does(client, model_name):
    pixels = to_batch([Image.open(io.BytesIO(GREEN)).convert("RGB")])
    response = client.post(f"/v2/models/{model_name}/infer", json={"inputs": [
        {"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32", "data": pixels.ravel().tolist()}]})
    scores = dict(zip(TINY_LABELS, response.get_json()["outputs"][0]["data"]))
    assert scores == pytest.approx(predict_scores(client, GREEN), abs=1e-6)


def test_fp32_pixels_in_binary_answer_as_in_json(client, model_name):
    pixels = to_batch([Image.open(io.BytesIO(GREEN)).convert("RGB")])
    given = {"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32"}
    in_json = client.post(f"/v2/models/{model_name}/infer", json={"inputs": [{**given, "data": pixels.ravel().tolist()}]})
    tensor = pixels.astype("<f4").tobytes()
    body, headers = binary_body({"inputs": [{**given, "parameters": {"binary_data_size": len(tensor)}}]}, tensor)
    in_binary = client.post(f"/v2/models/{model_name}/infer", data=body, headers=headers)
    assert in_binary.status_code == 200
    assert in_binary.get_json()["outputs"] == in_json.get_json()["outputs"]


def image_input(**changes) -> dict:
    given = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(RED).decode()]}
    return {"inputs": [{**given, **changes}]}


BAD_REQUESTS = {
    "not-json": (b"{not json", {}, 400),
    "no-inputs": (json.dumps({"outputs": []}).encode(), {}, 400),
    "two-inputs": (json.dumps({"inputs": image_input()["inputs"] * 2}).encode(), {}, 400),
    "wrong-datatype": (json.dumps(image_input(datatype="FP32")).encode(), {}, 400),
    "shape-of-2-for-1": (json.dumps(image_input(shape=[2])).encode(), {}, 400),
    "negative-shape": (json.dumps(image_input(shape=[-1])).encode(), {}, 400),
    "no-image": (json.dumps(image_input(shape=[0], data=[])).encode(), {}, 400),
    "too-many-images": (json.dumps(image_input(shape=[1000], data=["AA=="] * 1000)).encode(), {}, 413),
    "not-base64": (json.dumps(image_input(data=["%%%"])).encode(), {}, 400),
    "not-an-image": (json.dumps(image_input(data=[base64.b64encode(b"hello").decode()])).encode(), {}, 400),
    "pixel-bomb": (json.dumps(image_input(data=[base64.b64encode(png_header_only(60000, 60000)).decode()])).encode(), {}, 413),
    "pixels-out-of-range": (json.dumps({"inputs": [{"name": "pixels", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                                    "data": [2.0] * (3 * 224 * 224)}]}).encode(), {}, 400),
    "pixels-binary-not-whole-floats": (*binary_body({"inputs": [{"name": "pixels", "shape": [1, 3, 224, 224],
                                                                 "datatype": "FP32", "parameters": {"binary_data_size": 5}}]},
                                                    b"12345"), 400),
    "pixels-too-few": (json.dumps({"inputs": [{"name": "pixels", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                               "data": [0.5] * 10}]}).encode(), {}, 400),
    "unknown-output": (json.dumps({**image_input(), "outputs": [{"name": "logits"}]}).encode(), {}, 400),
    "classification-too-many": (json.dumps({**image_input(), "outputs": [{"name": "probabilities", "parameters": {
        "classification": 99}}]}).encode(), {}, 400),
    "header-length-past-the-body": (b"{}", {HEADER: "99"}, 400),
    "header-length-not-a-number": (b"{}", {HEADER: "x"}, 400),
    "binary-cut-inside-an-element": (*binary_body({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                               "parameters": {"binary_data_size": 8}}]},
                                                  struct.pack("<I", 100) + b"abcd"), 400),
    "binary-size-not-the-rest": (*binary_body({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                           "parameters": {"binary_data_size": 3}}]},
                                              bytes_tensor([RED])), 400),
}


@pytest.mark.parametrize("body, headers, status", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_get_the_protocols_error_and_nothing_breaks(client, model_name, body, headers, status):
    response = client.post(f"/v2/models/{model_name}/infer", data=body, headers=headers)
    assert response.status_code == status, response.get_data()[:300]
    assert set(response.get_json()) == {"error"} and len(response.get_json()["error"]) > 10
    assert infer_json(client, model_name, [RED]).status_code == 200


def test_infer_needs_the_api_key_where_one_is_set(tiny_model_path):
    client = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "API_KEY": "k" * 20}).test_client()
    name = client.get("/health").get_json()["model"]
    response = infer_json(client, name, [RED])
    assert response.status_code == 401 and "key" in response.get_json()["error"]
    assert client.get(f"/v2/models/{name}").status_code == 200  # metadata is public, as GET /model is
    body = {"inputs": image_input()["inputs"]}
    assert client.post(f"/v2/models/{name}/infer", json=body, headers={"X-API-Key": "k" * 20}).status_code == 200


def test_infer_is_recorded_and_counted_as_predict_is(client, model_name):
    before = client.get("/metrics").get_data(as_text=True)
    infer_json(client, model_name, [GREEN])
    after = client.get("/metrics").get_data(as_text=True)
    route = 'route="/v2/models/<name>/infer"'
    assert after.count(route) >= 1 and after != before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(header=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["inputs", "name", "shape", "datatype", "data", "parameters",
                                                "binary_data_size", "outputs", "classification"]), inner, max_size=4),
                           max_leaves=12),
       tail=st.binary(max_size=64), binary=st.booleans())
def test_any_body_gets_a_4xx_or_an_answer(client, model_name, header, tail, binary):
    head = json.dumps(header).encode()
    response = client.post(f"/v2/models/{model_name}/infer", data=head + tail if binary else head,
                           headers={HEADER: str(len(head))} if binary else {})
    assert response.status_code in (200, 400, 413, 415), response.get_data()[:300]
    assert response.status_code == 200 or isinstance(response.get_json()["error"], str)


# ---------------------------------------------------------------------------------------
# The unmodified client against the real server

@pytest.mark.slow
def test_tritonclient_against_the_procfile_server(tmp_path, data_dir):
    images = [path.read_bytes() for path in dataset_jpegs(data_dir / "ucmerced", per_class=1)[:4]]
    with procfile_server(log_path=tmp_path / "server.log") as (url, _front):
        triton = triton_http.InferenceServerClient(url.removeprefix("http://"))
        with urllib.request.urlopen(url + "/health", timeout=30) as health:
            name = json.loads(health.read())["model"]
        assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(name)
        assert triton.get_model_metadata(name)["name"] == name
        assert triton.get_model_config(name)["max_batch_size"] >= len(images)
        given = triton_http.InferInput("image", [len(images), 1], "BYTES")
        given.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(-1, 1), binary_data=True)
        wanted = [triton_http.InferRequestedOutput("probabilities", binary_data=True, class_count=1)]
        result = triton.infer(name, [given], outputs=wanted)
        best = [item.decode().split(":", 2) for item in result.as_numpy("probabilities").ravel()]
        expected = [json.loads(_post(url + "/predict", image)) for image in images]  # the same server's
        assert [label for _, _, label in best] == [answer["label"] for answer in expected]
        assert [float(score) for score, _, _ in best] == [answer["score"] for answer in expected]
        # and the model's own answer, computed here
        assert [label for _, _, label in best] == [model_answer(image, ROOT / "model.zip")["label"] for image in images]
        with pytest.raises(Exception, match="no-such-model"):
            triton.infer("no-such-model", [given])



def _post(url: str, image: bytes) -> bytes:
    request = urllib.request.Request(url, data=image, headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()
