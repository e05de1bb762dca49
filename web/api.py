"""The JSON API: POST /predict, GET /health, GET /model. Views only read, call, reply."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from classifier.errors import EmptyInput, MissingFile, UnsupportedImageType
from classifier.pipeline import Classifier

from .errors import error_response

api = Blueprint("api", __name__)

EXTENSION_KEY = "classifier"
_RAW_BODY_TYPES = ("image/", "application/octet-stream")


def get_classifier() -> Classifier | None:
    return current_app.extensions.get(EXTENSION_KEY)


def _model_not_ready():
    return error_response(503, "model_not_ready", "The model is still loading; retry shortly.")


@api.post("/predict")
def predict():
    classifier = get_classifier()
    if classifier is None:
        return _model_not_ready()
    top_k = classifier.parse_top_k(request.args.get("top"))
    prediction = classifier.classify(read_upload(), top_k=top_k)
    return jsonify(prediction.to_json())


@api.get("/health")
def health():
    classifier = get_classifier()
    if classifier is None:
        return jsonify({"status": "loading"}), 503
    model = classifier.model
    return jsonify({"status": "ok", "model": model.name, "version": model.version})


@api.get("/model")
def model_info():
    classifier = get_classifier()
    if classifier is None:
        return _model_not_ready()
    return jsonify(classifier.model.describe())


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
