"""The JSON API: POST /predict, POST /predict/batch, GET /health, GET /model.

Each route declares what it takes, answers and refuses (web/api_spec.py makes the OpenAPI
document from that). Views only read, call, reply. Here too is how the prediction routes
read an upload (in memory), the API key they need when API_KEY is set (``api_key_required``,
which /feedback shares), and the memory a large request gives back once it is answered.
"""

from __future__ import annotations

import hmac
import io
import logging
import time
from functools import partial, wraps
from urllib.parse import quote

from flask import Request, Response, after_this_request, current_app, g, jsonify, request
from flask_smorest.fields import Upload
from marshmallow import fields, validate
from werkzeug.exceptions import RequestEntityTooLarge

from classifier.engines import OnnxRuntimeEngine, TorchScriptEngine, trim_heap
from classifier.errors import (
    EmptyInput,
    InputError,
    InvalidParameter,
    MissingFile,
    TooManyFiles,
    UnsupportedImageType,
)
from classifier.pipeline import Prediction

from .api_spec import Blueprint, Label, Schema, Setting, TopK
from .errors import ApiError, error_body
from .records import record_predictions
from .served_model import CLIENT_ID_HEADER, get_classifier, loaded_classifier, models_for_request
from .telemetry import request_id

api = Blueprint("api", __name__, description="Classify images, and the served model")

_RAW_BODY_TYPES = ("image/", "application/octet-stream")
# Bodies at least this large leave enough freed heap behind to be worth giving back: the data
# set's small JPEGs are far below it, a phone's photo above it (docs/memory.md, "How it works").
LARGE_BODY_BYTES = 256 * 1024
# What the prediction routes may answer besides their result (web/errors.py's codes).
_PREDICTION_ERRORS = (
    "missing_file", "empty_file", "not_an_image", "invalid_parameter", "incomplete_body", "unauthorized",
    "request_timeout", "payload_too_large", "image_too_large", "unsupported_type", "rate_limited",
    "model_not_ready",
)
_ENGINES = [TorchScriptEngine.name, OnnxRuntimeEngine.name]
MODEL_VERSION_HEADER = "X-Model-Version"
_ANSWER_HEADERS = {MODEL_VERSION_HEADER: {
    "description": "The model that gave this answer: its name and version, as name/version.",
    "schema": {"type": "string"}}}
CLIENT_ID = {"in": "header", "name": CLIENT_ID_HEADER, "required": False, "schema": {"type": "string"},
             "description": "With a candidate model in canary mode, the same id gets the same model."}

log = logging.getLogger(__name__)


def api_key_required(view):
    """Answer 401 unless the request carries API_KEY (when one is configured)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        expected = current_app.config.get("API_KEY") or ""
        if expected and not _all_match(presented_keys(), expected):
            raise ApiError("unauthorized", headers={"WWW-Authenticate": 'Bearer realm="predict"'})
        return view(*args, **kwargs)

    return guarded


def presented_keys() -> list[str]:
    """Every credential the request carries: ``Authorization: Bearer <key>``, ``X-API-Key``.

    An Authorization header of another scheme counts as a wrong key, not as no key.
    """
    keys = []
    if "Authorization" in request.headers:
        scheme, _, credentials = request.headers["Authorization"].partition(" ")
        keys.append(credentials.strip() if scheme.lower() == "bearer" else "")
    if "X-API-Key" in request.headers:
        keys.append(request.headers["X-API-Key"].strip())
    return keys


def _all_match(presented: list[str], expected: str) -> bool:
    # A wrong key is never overlooked because a right one came along in the other header.
    return bool(presented) and all(_matches(key, expected) for key in presented)


def _matches(presented: str, expected: str) -> bool:
    # compare_digest takes as long whatever the first differing byte: no timing oracle.
    # Header values reach WSGI as latin-1 text; encoding them back gives the bytes sent.
    return hmac.compare_digest(
        presented.encode("latin-1", "replace"), expected.encode("latin-1", "replace")
    )


class TopQuery(Schema):
    top = TopK(validate=validate.Range(min=1), metadata={"description": (
        "How many of the best classes to list, from 1 to the number of classes; empty means the default.")})


class ImageForm(Schema):
    file = Upload(required=True, metadata={"minLength": 1})


class BatchForm(Schema):
    # An empty file is one more item with its own error, not a bad batch.
    file = fields.List(Upload(), required=True, validate=validate.Length(min=1),
                       metadata={"maxItems": Setting("MAX_BATCH_FILES")})


_IMAGE_BYTES = {"schema": {"type": "string", "format": "binary", "minLength": 1}}
# The body read_upload takes: a multipart part named `file`, or the raw bytes with an image/*
# or application/octet-stream Content-Type (three of which the document names).
IMAGE_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": ImageForm},
    **{media_type: _IMAGE_BYTES for media_type in ("application/octet-stream", "image/jpeg", "image/png")},
}}
BATCH_BODY = {"required": True, "content": {"multipart/form-data": {"schema": BatchForm}}}


class LabelScore(Schema):
    label = Label(required=True)
    score = fields.Float(required=True, validate=validate.Range(0, 1))


class PredictionResult(LabelScore):
    top = fields.List(fields.Nested(LabelScore), required=True, validate=validate.Length(min=1))


class BatchResults(Schema):
    # A prediction, or the error of an image that could not be classified.
    results = fields.List(fields.Raw(metadata={"oneOf": [
        {"$ref": "#/components/schemas/PredictionResult"}, {"$ref": "#/components/schemas/Error"},
    ]}), required=True)


class Health(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))
    model = fields.String(required=True)
    version = fields.String(required=True)
    engine = fields.String(required=True, validate=validate.OneOf(_ENGINES))
    engine_reason = fields.String(metadata={"description": (
        "Why this engine serves: the check that verified the ONNX copy, or why there is none.")})


class Loading(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["loading"]))


class ModelInfo(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    labels = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    num_classes = fields.Integer(required=True, validate=validate.Range(min=1))
    input_size = fields.List(fields.Integer(), required=True, validate=validate.Length(2, 2))
    engine = fields.String(required=True, validate=validate.OneOf(_ENGINES), metadata={"description": (
        "What runs the model: ONNX Runtime on the verified ONNX copy, or the TorchScript file.")})
    engine_reason = fields.String(metadata={"description": "Why this engine serves (as in GET /health)."})


@api.post("/predict")
@api.doc(parameters=[{"in": "query", "schema": TopQuery}, CLIENT_ID], requestBody=IMAGE_BODY)
@api.response(200, PredictionResult, headers=_ANSWER_HEADERS)
@api.errors(*_PREDICTION_ERRORS)
@api_key_required
def predict():
    """Classify one image

    The image in a multipart part named `file`, or the raw bytes with an image Content-Type.
    JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF.
    """
    upload, top = read_upload(), query_value("top")
    return jsonify(classify([upload], top, one=True)[0].to_json())


@api.post("/predict/batch")
@api.doc(parameters=[{"in": "query", "schema": TopQuery}, CLIENT_ID], requestBody=BATCH_BODY)
@api.response(200, BatchResults, description="One result per file, in order.", headers=_ANSWER_HEADERS)
@api.errors(*_PREDICTION_ERRORS, "too_many_files")
@api_key_required
def predict_batch():
    """Classify several images

    One multipart part named `file` per image, at most MAX_BATCH_FILES. The results come in
    the same order; an image that cannot be classified gets an error in its place and the
    others are still classified.
    """
    uploads, top = read_batch_uploads(current_app.config["MAX_BATCH_FILES"]), query_value("top")
    return jsonify({"results": [batch_item_json(result) for result in classify(uploads, top)]})


@api.get("/health")
@api.response(200, Health, description="The model is loaded and warmed up.")
@api.alt_response(503, schema=Loading, description="The model is still loading.")
def health():
    """Whether this worker has loaded the model, and which"""
    body, status = health_report()
    return jsonify(body), status


@api.get("/model")
@api.response(200, ModelInfo, description="The served model.")
@api.errors("model_not_ready")
def model_info():
    """The model's metadata (meta.json) and its labels"""
    return jsonify(get_classifier().describe())


def classify(uploads: list, top: str | None, one: bool = False, models=None) -> list[Prediction | InputError]:
    """Classify ``uploads`` with the model that answers this request and record the predictions.

    That is the served model, or the candidate on its share in canary mode; in shadow mode the
    candidate classifies its share too once the answer is sent (``models_for_request``, unless
    the caller chose ``models``, the answering one and the shadow). The answer names its model
    (X-Model-Version). An upload is an image file's bytes, or a picture already of the model's
    input (web/inference_protocol.py's pixels). An image that cannot be classified gets its
    error in its place, or, with ``one``, raises it.
    """
    classifier, shadow = models or models_for_request()
    top_k = classifier.parse_top_k(top)
    if one:
        images = [classifier.prepare(item) if isinstance(item, bytes) else item for item in uploads]
    else:
        images = classifier.prepare_many(uploads)
    started = time.perf_counter()
    results = classifier.classify_prepared(images, top_k=top_k)
    record_predictions(classifier, images, results, time.perf_counter() - started)
    after_this_request(partial(_name_the_model, classifier.model))
    if shadow is not None:
        after_this_request(partial(_shadow_after_the_answer, shadow, images, min(top_k, len(shadow.labels))))
    return results


def _name_the_model(model, response: Response) -> Response:
    response.headers[MODEL_VERSION_HEADER] = f"{quote(model.name, safe='')}/{quote(model.version, safe='')}"
    return response


def _shadow_after_the_answer(candidate, images, top_k: int, response: Response) -> Response:
    """The candidate classifies the request's images once the answer is sent (at the response's close)."""
    app, rid = current_app._get_current_object(), request_id()

    def shadow():
        with app.app_context():
            g.request_id = rid  # the answer's, so that feedback on it scores both models
            try:
                started = time.perf_counter()
                results = candidate.classify_prepared(images, top_k=top_k)
                record_predictions(candidate, images, results, time.perf_counter() - started, shadow=True)
            except Exception:  # the client has its answer: log it, keep the worker
                log.exception("the candidate could not shadow request %s", rid)

    response.call_on_close(shadow)
    return response


def health_report() -> tuple[dict, int]:
    """GET /health's answer: 200 with the served model and engine, or 503 while it loads."""
    classifier = loaded_classifier()
    if classifier is None:
        return {"status": "loading"}, 503
    model = classifier.model
    return {"status": "ok", "model": model.name, "version": model.version,
            "engine": classifier.engine.name, "engine_reason": classifier.engine_reason}, 200


def query_value(name: str) -> str | None:
    """A query parameter given at most once: ``?top=1&top=5`` is ambiguous, so refused."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise InvalidParameter(f"Give '{name}' once; it was given {len(values)} times.")
    return values[0] if values else None


def read_upload() -> bytes:
    """The image bytes: a multipart part named ``file``, or the raw request body."""
    content_type = request.mimetype or ""
    if content_type == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise MissingFile(
                "No file in the form. Send the image in a multipart field named 'file' "
                "(curl -F file=@photo.jpg ...)."
            )
        data = upload.read()
        if not data:
            raise EmptyInput("The uploaded file is empty.")
        return data
    if content_type.startswith(_RAW_BODY_TYPES):
        data = request.get_data(cache=False)
        limit = request.max_content_length
        if request.content_length is None and limit is not None and len(data) >= limit:
            # A streamed (chunked) body has no length to check up front, and Werkzeug stops
            # reading it at the limit: one that reached the limit is too large, not cut.
            raise RequestEntityTooLarge()
        if not data:
            raise EmptyInput("The request body is empty. Send the image's bytes.")
        return data
    if not content_type and not request.content_length:
        raise MissingFile(
            "No image sent. Use multipart field 'file' (curl -F file=@photo.jpg) or send "
            "the bytes with Content-Type: image/jpeg (curl --data-binary @photo.jpg)."
        )
    raise UnsupportedImageType(
        f"Content-Type {content_type or '(none)'} is not accepted. Send multipart/form-data "
        "with a field named 'file', or the raw image with an image/* Content-Type."
    )


def read_batch_uploads(max_files: int) -> list[bytes]:
    """The bytes of every multipart part named ``file``, in the order they were sent."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedImageType(
            f"Content-Type {request.mimetype or '(none)'} is not accepted here. Send "
            "multipart/form-data with one part named 'file' per image "
            "(curl -F file=@a.jpg -F file=@b.jpg ...)."
        )
    uploads = request.files.getlist("file")
    if not uploads:
        raise MissingFile(
            "No files in the form. Send each image in a multipart part named 'file' "
            "(curl -F file=@a.jpg -F file=@b.jpg ...)."
        )
    if len(uploads) > max_files:
        raise TooManyFiles(
            f"{len(uploads)} files sent; the limit is {max_files} per request. "
            "Split them over several requests."
        )
    return [upload.read() for upload in uploads]


def batch_item_json(result: Prediction | InputError) -> dict:
    if isinstance(result, InputError):
        return error_body(result.code, result.message)
    return result.to_json()


class InMemoryUploadRequest(Request):
    """Uploaded files kept in memory while Flask parses the form (app.py makes it the app's).

    Werkzeug spools file parts over 500 KB to a temporary file on disk, and the view reads
    them back whole anyway (the decoder needs the bytes); MAX_UPLOAD_MB bounds the memory.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


@api.after_request
def give_memory_back(response: Response) -> Response:
    """After a phone photo or a batch, return the freed heap to the system once the answer is sent.

    glibc keeps freed memory for reuse, and summed over the workers that decides which dyno the
    server fits (docs/memory.md); trimming makes the next request fault its buffers back in,
    so only large requests pay for it, at the response's close (after its last byte).
    """
    if (request.content_length or 0) >= LARGE_BODY_BYTES or request.path == "/predict/batch":
        response.call_on_close(trim_heap)
    return response
