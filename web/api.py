"""The JSON API: POST /predict, POST /predict/batch, GET /health, GET /model, GET /openapi.json.

Views only read, call, reply.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from classifier.errors import (
    EmptyInput,
    InputError,
    InvalidParameter,
    MissingFile,
    TooManyFiles,
    UnsupportedImageType,
)
from classifier.pipeline import Prediction

from .auth import api_key_required
from .errors import error_body
from .openapi import openapi_document
from .recording import record_predictions
from .served_model import get_classifier, loaded_classifier

api = Blueprint("api", __name__)

_RAW_BODY_TYPES = ("image/", "application/octet-stream")


@api.post("/predict")
@api_key_required
def predict():
    classifier = get_classifier()
    top_k = classifier.parse_top_k(query_value("top"))
    image = classifier.prepare(read_upload())
    prediction = classifier.classify_prepared([image], top_k=top_k)[0]
    record_predictions(classifier, [image], [prediction])
    return jsonify(prediction.to_json())


@api.post("/predict/batch")
@api_key_required
def predict_batch():
    classifier = get_classifier()
    top_k = classifier.parse_top_k(query_value("top"))
    images = classifier.prepare_many(read_batch_uploads(current_app.config["MAX_BATCH_FILES"]))
    results = classifier.classify_prepared(images, top_k=top_k)
    record_predictions(classifier, images, results)
    return jsonify({"results": [batch_item_json(result) for result in results]})


@api.get("/health")
def health():
    classifier = loaded_classifier()
    if classifier is None:
        return jsonify({"status": "loading"}), 503
    model = classifier.model
    return jsonify({"status": "ok", "model": model.name, "version": model.version,
                    "engine": classifier.engine.name, "engine_reason": classifier.engine_reason})


@api.get("/model")
def model_info():
    return jsonify(get_classifier().describe())


@api.get("/openapi.json")
def openapi():
    classifier = loaded_classifier()
    labels = classifier.labels if classifier is not None else ()
    return jsonify(openapi_document(current_app, labels))


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
