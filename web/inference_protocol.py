"""The Open Inference Protocol (KServe's V2, Triton's HTTP API) over the same model as /predict.

Its clients (tritonclient, KServe's SDK, perf_analyzer) call ``/v2/...``: server and model
metadata, health, Triton's model configuration, and ``infer``, with the binary tensor data
and classification extensions. An image comes as a BYTES element (base64 in JSON, raw bytes
in binary form) and is decoded as /predict decodes it; a client that preprocesses sends the
FP32 pixels. Either way ``api.classify`` answers it, so the limits, the record, the metrics
and a candidate's share are /predict's. Errors are the protocol's ``{"error": "..."}``, with
the statuses of web/errors.py's table (``register_error_handlers`` gives them that shape under
``/v2``). How to call it: docs/api.md, "Open Inference Protocol".
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

import numpy as np
from flask import Response, current_app, jsonify, request
from marshmallow import fields
from PIL import Image

from classifier.errors import EmptyInput, InvalidParameter, TooManyFiles
from classifier.images import INPUT_SIZE

from .api import api_key_required, classify
from .api_spec import API_VERSION, Blueprint, Schema
from .errors import OPEN_INFERENCE_PREFIX, ApiError
from .served_model import get_classifier, loaded_candidate, loaded_classifier, models_for_request

inference_protocol = Blueprint("inference_protocol", __name__, url_prefix=OPEN_INFERENCE_PREFIX.rstrip("/"),
                               description="The Open Inference Protocol (KServe V2, Triton HTTP)")

SERVER_NAME = "image-classification-service"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration"]
BINARY_HEADER = "Inference-Header-Content-Length"
IMAGE_INPUT, PIXELS_INPUT, OUTPUT = "image", "pixels", "probabilities"
_PIXELS_SHAPE = [3, INPUT_SIZE[1], INPUT_SIZE[0]]
_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}
_MODEL_ERRORS = ("unknown_model", "model_not_ready")
_INFER_ERRORS = ("invalid_parameter", "empty_file", "not_an_image", "image_too_large", "payload_too_large",
                 "too_many_files", "unsupported_type", "unauthorized", "request_timeout", "rate_limited",
                 *_MODEL_ERRORS)
_OBJECT = {"type": "object"}


class Tensor(Schema):
    name = fields.String(required=True)
    datatype = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True)


class InferenceRequest(Schema):
    inputs = fields.List(fields.Nested(Tensor), required=True)


_INFER_BODY = {"required": True, "content": {
    "application/json": {"schema": InferenceRequest},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}}
_BINARY_PARAMETER = {"in": "header", "name": BINARY_HEADER, "required": False, "schema": {"type": "integer"},
                     "description": "The binary tensor data extension: the length of the JSON that "
                                    "starts the body."}


@inference_protocol.get("")
@inference_protocol.response(200, _OBJECT, description="name, version and extensions.")
def server_metadata():
    """The server's metadata and the protocol's extensions it speaks"""
    return jsonify({"name": SERVER_NAME, "version": API_VERSION, "extensions": EXTENSIONS})


@inference_protocol.get("/health/live")
@inference_protocol.response(200, _OBJECT, description="The server answers.")
def live():
    """Whether the server answers"""
    return jsonify({"live": True})


@inference_protocol.get("/health/ready")
@inference_protocol.response(200, _OBJECT, description="The model is loaded and warmed up.")
@inference_protocol.errors("model_not_ready")
def ready():
    """Whether the server is ready to infer (its model is loaded)"""
    get_classifier()
    return jsonify({"ready": True})


def model_route(rule: str, method: str = "get"):
    """``/models/{name}<rule>`` and ``/models/{name}/versions/{version}<rule>`` for one view."""
    def register(view):
        for prefix in ("/models/<name>", "/models/<name>/versions/<version>"):
            endpoint = view.__name__ + prefix.count("/") * "_"
            getattr(inference_protocol, method)(prefix + rule, endpoint=endpoint)(view)
        return view
    return register


@model_route("")
@inference_protocol.response(200, _OBJECT, description="name, versions, platform, inputs and outputs.")
@inference_protocol.errors(*_MODEL_ERRORS)
def model_metadata(name: str, version: str | None = None):
    """The model's metadata: its versions, inputs and outputs"""
    classifier = named_model(name, version)
    return jsonify({"name": name, "versions": versions(), "platform": platform(classifier),
                    "inputs": [tensor(IMAGE_INPUT, "BYTES", [-1]),
                               tensor(PIXELS_INPUT, "FP32", [-1, *_PIXELS_SHAPE])],
                    "outputs": [tensor(OUTPUT, "FP32", [-1, len(classifier.labels)])]})


@model_route("/ready")
@inference_protocol.response(200, _OBJECT, description="The model is ready.")
@inference_protocol.errors(*_MODEL_ERRORS)
def model_ready(name: str, version: str | None = None):
    """Whether the model is ready to infer"""
    named_model(name, version)
    return jsonify({"name": name, "ready": True})


@model_route("/config")
@inference_protocol.response(200, _OBJECT, description="Triton's model configuration.")
@inference_protocol.errors(*_MODEL_ERRORS)
def model_config(name: str, version: str | None = None):
    """Triton's model configuration, which perf_analyzer reads before it sends load"""
    classifier = named_model(name, version)
    return jsonify({
        "name": name, "platform": platform(classifier),
        "max_batch_size": current_app.config["MAX_BATCH_FILES"],
        # With max_batch_size, dims leave out the batch: an image is one element.
        "input": [{"name": IMAGE_INPUT, "data_type": "TYPE_STRING", "dims": [1], "optional": True},
                  {"name": PIXELS_INPUT, "data_type": "TYPE_FP32", "dims": _PIXELS_SHAPE, "optional": True}],
        "output": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [len(classifier.labels)]}],
    })


@model_route("/infer", method="post")
@inference_protocol.doc(requestBody=_INFER_BODY, parameters=[_BINARY_PARAMETER])
@inference_protocol.response(200, _OBJECT, description="The outputs, in JSON or with binary tensor data.")
@inference_protocol.errors(*_INFER_ERRORS)
@api_key_required
def infer(name: str, version: str | None = None):
    """Classify images: encoded files (BYTES) or preprocessed pixels (FP32)"""
    header, binary = read_request()
    items = read_input(header, binary)
    model = named_model(name, version)
    # A version names its model; without one, a candidate takes its share as on /predict.
    models = (model, None) if version else models_for_request()
    classifier = models[0]
    outputs = requested_outputs(header, len(classifier.labels))
    predictions = classify(items, str(len(classifier.labels)), one=True, models=models)
    return respond(header, classifier, predictions, outputs)


def named_model(name: str, version: str | None):
    """The served model (or the candidate) of that name and version; 404 for another."""
    served = get_classifier()
    for classifier in (served, loaded_candidate()):
        model = classifier.model if classifier is not None else None
        if model is not None and model.name == name and version in (None, model.version):
            return classifier
    asked = f"{name!r} version {version!r}" if version else repr(name)
    raise ApiError("unknown_model", f"No model {asked}: this server serves {served.model.name!r}, "
                                    f"versions {versions()} (GET /v2/models/{served.model.name}).")


def versions() -> list[str]:
    return [c.model.version for c in (loaded_classifier(), loaded_candidate()) if c is not None]


def platform(classifier) -> str:
    return _PLATFORMS.get(classifier.engine.name, classifier.engine.name)


def tensor(name: str, datatype: str, shape: list[int]) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape}


def read_request() -> tuple[dict, bytes]:
    """The request's JSON and, with the binary tensor data extension, the bytes after it."""
    body = request.get_data(cache=False)
    length = request.headers.get(BINARY_HEADER)
    if length is not None and not (length.isdigit() and 0 < int(length) <= len(body)):
        raise InvalidParameter(f"{BINARY_HEADER} must be the length of the JSON at the start of the body "
                               f"(1 to {len(body)}), not {length!r}.")
    split = int(length) if length is not None else len(body)
    try:
        header = json.loads(body[:split])
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidParameter(f"The inference request is not valid JSON ({error}).") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidParameter("The inference request is a JSON object with a list of 'inputs'.")
    return header, body[split:]


def read_input(header: dict, binary: bytes) -> list:
    """The request's one input as a list of images: encoded files (bytes) or prepared pictures."""
    if len(header["inputs"]) != 1 or not isinstance(header["inputs"][0], dict):
        raise InvalidParameter(f"Send one input: {IMAGE_INPUT!r} (BYTES, encoded images) or {PIXELS_INPUT!r} "
                               f"(FP32, [N, {', '.join(map(str, _PIXELS_SHAPE))}] in [0, 1]).")
    given = header["inputs"][0]
    shape = given.get("shape")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidParameter("An input's 'shape' is a list of sizes, such as [1].")
    count, limit = shape[0], current_app.config["MAX_BATCH_FILES"]
    if count > limit:
        raise TooManyFiles(f"{count} images in one request; the limit is {limit} "
                           "(the model's max_batch_size).")
    if count == 0:
        raise EmptyInput("The input holds no image.")
    kind = (given.get("name"), given.get("datatype"))
    size = (given.get("parameters") or {}).get("binary_data_size")
    if size is not None and (type(size) is not int or size != len(binary)):
        raise InvalidParameter(f"binary_data_size must be the {len(binary)} bytes after the JSON, "
                               f"not {size!r}.")
    if kind == (IMAGE_INPUT, "BYTES") and shape in ([count], [count, 1]):
        images = byte_elements(binary) if size is not None else base64_elements(given.get("data"))
        if len(images) != count:
            raise InvalidParameter(f"The input's shape says {count} images; its data holds {len(images)}.")
        return images
    if kind == (PIXELS_INPUT, "FP32") and shape == [count, *_PIXELS_SHAPE]:
        return pictures(binary if size is not None else given.get("data"), shape)
    raise InvalidParameter(f"The input is {IMAGE_INPUT!r} (BYTES, shape [N] or [N, 1]) or {PIXELS_INPUT!r} "
                           f"(FP32, shape [N, {', '.join(map(str, _PIXELS_SHAPE))}]); got {kind} {shape}.")


def byte_elements(binary: bytes) -> list[bytes]:
    """The binary form of a BYTES tensor: each element's length (4 bytes, little-endian), then it."""
    elements, offset = [], 0
    while offset < len(binary):
        if offset + 4 > len(binary):
            raise InvalidParameter("The BYTES tensor data ends inside an element's length.")
        (length,) = struct.unpack_from("<I", binary, offset)
        elements.append(binary[offset + 4 : offset + 4 + length])
        offset += 4 + length
        if offset > len(binary):
            raise InvalidParameter("The BYTES tensor data ends inside an element.")
    return elements


def base64_elements(data) -> list[bytes]:
    """A BYTES tensor in JSON: each image as a base64 string."""
    # Shape [N] or [N, 1]: each element, or a list of one.
    flat = None
    if isinstance(data, list):
        flat = [item[0] if isinstance(item, list) and len(item) == 1 else item for item in data]
    if not flat or not all(isinstance(item, str) for item in flat):
        raise InvalidParameter("In JSON, a BYTES input's 'data' is a list of base64 strings, one per image.")
    try:
        return [base64.b64decode(item, validate=True) for item in flat]
    except (binascii.Error, ValueError):
        raise InvalidParameter("An element of the BYTES input is not base64.") from None


def pictures(data: bytes | list, shape: list[int]) -> list[Image.Image]:
    """FP32 pixels in [0, 1], N×3×H×W (little-endian bytes, or numbers in JSON), as the model's
    input pictures (read at 8 bits, as decoded images are)."""
    try:
        if isinstance(data, bytes):
            values = np.frombuffer(data, "<f4").reshape(shape)
        else:
            values = np.asarray(data, dtype=np.float32).reshape(shape)
    except (TypeError, ValueError):
        raise InvalidParameter(f"The FP32 input's data must hold {int(np.prod(shape))} numbers.") from None
    if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
        raise InvalidParameter("The FP32 input's values must be in [0, 1].")
    pixels = (values * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    return [Image.fromarray(np.ascontiguousarray(picture), "RGB") for picture in pixels]


def requested_outputs(header: dict, class_count: int) -> dict:
    """{"classification": k or 0, "binary": bool} for the one output, as the request asks."""
    binary = (header.get("parameters") or {}).get("binary_data_output") is True
    asked = header.get("outputs") or [{"name": OUTPUT}]
    one = isinstance(asked, list) and len(asked) == 1 and isinstance(asked[0], dict)
    if not one or asked[0].get("name") != OUTPUT:
        raise InvalidParameter(f"The one output is {OUTPUT!r}; ask for it, or for no output at all.")
    parameters = asked[0].get("parameters") or {}
    k = parameters.get("classification", 0)
    if type(k) is not int or not 0 <= k <= class_count:
        raise InvalidParameter(f"'classification' is a number of classes from 1 to {class_count}, not {k!r}.")
    return {"classification": k, "binary": parameters.get("binary_data", binary) is True}


def respond(header: dict, classifier, predictions, output: dict) -> Response:
    """The inference response: probabilities (FP32 [N, C]) or, classified, BYTES [N, k]."""
    count, labels = len(predictions), classifier.labels
    k = output["classification"]
    if k:
        index = {label: position for position, label in enumerate(labels)}
        strings = [f"{score:f}:{index[label]}:{label}".encode()
                   for prediction in predictions for label, score in prediction.top[:k]]
        described = tensor(OUTPUT, "BYTES", [count, k])
        if output["binary"]:
            data = b"".join(struct.pack("<I", len(string)) + string for string in strings)
        else:
            data = [string.decode() for string in strings]
    else:
        rows = [[scores[label] for label in labels] for scores in (dict(p.top) for p in predictions)]
        described = tensor(OUTPUT, "FP32", [count, len(labels)])
        data = np.asarray(rows, dtype="<f4").tobytes() if output["binary"] else sum(rows, [])
    model = classifier.model
    answer = {"model_name": model.name, "model_version": model.version, "outputs": [described]}
    if "id" in header:
        answer["id"] = str(header["id"])
    if not output["binary"]:
        described["data"] = data
        return jsonify(answer)
    described["parameters"] = {"binary_data_size": len(data)}
    head = json.dumps(answer).encode()
    return Response(head + data, content_type="application/octet-stream",
                    headers={BINARY_HEADER: str(len(head))})
