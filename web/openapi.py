"""The OpenAPI 3 document served at GET /openapi.json: every route, body and error.

It is built for each app, so that it states that app's limits (files per batch, the number
of classes ``top`` may ask for) and whether the prediction routes need the API key.
``tests/test_openapi.py`` runs Schemathesis against it, and checks that every route the app
has is described here. Routes described here that an app does not have are left out of what
it serves, so the document never promises a route that would answer 404.
"""

from __future__ import annotations

from flask import Flask

from classifier.pipeline import DEFAULT_TOP_K

from .access_log import REQUEST_ID_PATTERN
from .errors import human_size
from .settings import DURATION_PATTERN, MAX_DURATION_S

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"


def openapi_document(app: Flask, labels: tuple[str, ...] = ()) -> dict:
    """The document for ``app`` serving a model with ``labels``, limited to its routes."""
    routes = _routes(app)
    paths = {
        path: {method: operation for method, operation in operations.items() if (path, method) in routes}
        for path, operations in _paths(app).items()
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Image classification API",
            "version": API_VERSION,
            "description": (
                "Classifies an uploaded image with one TorchScript model. Every error is JSON "
                "{\"error\": {\"code\", \"message\"}} with a 4xx status (503 while the model loads)."
            ),
        },
        "paths": {path: operations for path, operations in paths.items() if operations},
        "components": _components(app, labels),
    }


def _routes(app: Flask) -> set[tuple[str, str]]:
    """(path, method) for every route of ``app``; HEAD and OPTIONS are implied by HTTP."""
    return {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _prediction_operation(app: Flask, summary: str, description: str, body: dict, ok: dict) -> dict:
    operation = {
        "summary": summary,
        "description": description,
        "parameters": [_ref("parameters", "top")],
        "requestBody": {"required": True, "content": body},
        "responses": {
            "200": ok,
            "400": _ref("responses", "BadRequest"),
            "401": _ref("responses", "Unauthorized"),
            "408": _ref("responses", "RequestTimeout"),
            "413": _ref("responses", "TooLarge"),
            "415": _ref("responses", "UnsupportedType"),
            "429": _ref("responses", "RateLimited"),
            "503": _ref("responses", "ModelNotReady"),
        },
    }
    if app.config.get("API_KEY"):
        operation["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    return operation


def _paths(app: Flask) -> dict:
    max_files = int(app.config["MAX_BATCH_FILES"])
    binary = {"type": "string", "format": "binary", "minLength": 1}
    return {
        "/": {
            "get": {
                "summary": "The browser page",
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Whether this worker has loaded the model, and which",
                "responses": {
                    "200": _json(_ref("schemas", "Health"), "The model is loaded and warmed up."),
                    "503": _json(_ref("schemas", "Loading"), "The model is still loading."),
                },
            }
        },
        "/model": {
            "get": {
                "summary": "The model's metadata (meta.json) and its labels",
                "responses": {
                    "200": _json(_ref("schemas", "ModelInfo"), "The served model."),
                    "503": _ref("responses", "ModelNotReady"),
                },
            }
        },
        "/model.onnx.json": {
            "get": {
                "summary": "The manifest of the model's ONNX copy, which the page runs in the browser",
                "responses": {
                    "200": _json({"type": "object", "required": ["labels", "sha256", "url"]}, "Labels, hash and URL of model.onnx."),
                    "404": _ref("responses", "NoDeviceModel"),
                },
            }
        },
        "/model.onnx": {
            "get": {
                "summary": "The served model as ONNX float32, for onnxruntime-web",
                "responses": {
                    "200": {
                        "description": "The ONNX file.",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "404": _ref("responses", "NoDeviceModel"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
        "/predict": {
            "post": _prediction_operation(
                app,
                "Classify one image",
                "The image in a multipart part named `file`, or the raw bytes with an image "
                "Content-Type. JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF.",
                {
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["file"], "properties": {"file": binary}}
                    },
                    "application/octet-stream": {"schema": binary},
                    "image/jpeg": {"schema": binary},
                    "image/png": {"schema": binary},
                },
                _json(_ref("schemas", "Prediction"), "The prediction."),
            )
        },
        "/predict/batch": {
            "post": _prediction_operation(
                app,
                "Classify several images",
                f"One multipart part named `file` per image, at most {max_files}. The results "
                "come in the same order; an image that cannot be classified gets an error in "
                "its place and the others are still classified.",
                {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                # An empty file is one more item with its own error, not a bad batch.
                                "file": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                    "minItems": 1,
                                    "maxItems": max_files,
                                }
                            },
                        }
                    }
                },
                _json(_ref("schemas", "BatchResults"), "One result per file, in order."),
            )
        },
        **_monitoring_paths(app),
    }


def _monitoring_paths(app: Flask) -> dict:
    """POST /feedback and GET /monitoring (web/monitoring.py, docs/monitoring.md)."""
    feedback = {
        "summary": "Say which class an earlier prediction should have been",
        "description": (
            "Names the prediction by the X-Request-ID header its answer carried (and `item`, "
            "its place in a batch). A later answer for the same prediction replaces the "
            "earlier one; `replaced` says what it replaced."
        ),
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("schemas", "FeedbackRequest")}}},
        "responses": {
            "200": _json(_ref("schemas", "Feedback"), "Recorded."),
            "400": _json(_ref("schemas", "Error"), "invalid_parameter (the body) or unknown_label (not one of the model's classes)."),
            "401": _ref("responses", "Unauthorized"),
            "404": _json(_ref("schemas", "Error"), "unknown_request_id: no recorded prediction has that id."),
            "503": _json(_ref("schemas", "Error"), "model_not_ready or database_unavailable: retry shortly."),
        },
    }
    if app.config.get("API_KEY"):
        feedback["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    return {
        "/feedback": {"post": feedback},
        "/monitoring": {
            "get": {
                "summary": "The served model's predictions, feedback, confidence and drift over a window",
                "parameters": [
                    {
                        "name": "window",
                        "in": "query",
                        "required": False,
                        "description": "How far back to look: a whole number and s, m, h or d (at most "
                                       f"{MAX_DURATION_S // 86400}d); empty means the default.",
                        "allowEmptyValue": True,
                        "schema": {"type": "string", "pattern": f"^{DURATION_PATTERN.pattern}$",
                                   "default": app.config["MONITORING_WINDOW"]},
                    }
                ],
                "responses": {
                    "200": _json(_ref("schemas", "Monitoring"), "The figures."),
                    "400": _json(_ref("schemas", "Error"), "invalid_parameter: a window that is not a duration."),
                    "503": _json(_ref("schemas", "Error"), "model_not_ready or database_unavailable: retry shortly."),
                },
            }
        },
    }


def _monitoring_schemas(label: dict) -> dict:
    from .monitoring import MAX_ITEM  # web/monitoring.py imports this module's caller

    share = {"type": "number", "minimum": 0, "maximum": 1, "nullable": True}
    count = {"type": "integer", "minimum": 0}
    return {
        "FeedbackRequest": {
            "type": "object",
            "required": ["request_id", "label"],
            "properties": {
                "request_id": {"type": "string", "pattern": f"^{REQUEST_ID_PATTERN.pattern}$"},
                "label": label,
                "item": {"type": "integer", "minimum": 0, "maximum": MAX_ITEM, "default": 0},
            },
        },
        "Feedback": {
            "type": "object",
            "required": ["request_id", "item", "label", "predicted", "correct", "replaced"],
            "properties": {
                "request_id": {"type": "string"},
                "item": count,
                "label": {"type": "string"},
                "predicted": {"type": "string"},
                "correct": {"type": "boolean"},
                "replaced": {"type": "string", "nullable": True, "description": "The earlier answer this one replaced."},
            },
        },
        "Monitoring": {
            "type": "object",
            "required": ["model", "window", "predictions", "feedback", "low_confidence", "drift"],
            "properties": {
                "model": {"type": "object", "required": ["name", "version"]},
                "window": {"type": "object", "required": ["seconds", "since", "until"]},
                "predictions": {
                    "type": "object",
                    "required": ["total", "by_label"],
                    "properties": {"total": count, "by_label": {"type": "object", "additionalProperties": count}},
                },
                "feedback": {
                    "type": "object",
                    "required": ["total", "correct", "accuracy"],
                    "properties": {"total": count, "correct": count, "accuracy": share},
                },
                "low_confidence": {
                    "type": "object",
                    "required": ["threshold", "total", "share"],
                    "properties": {"threshold": share, "total": count, "share": share},
                },
                "drift": {
                    "type": "object",
                    "required": ["score", "threshold", "drifting", "reason"],
                    "properties": {
                        "score": share,
                        "drifting": {"type": "boolean", "nullable": True},
                        "reason": {"type": "string", "nullable": True},
                    },
                },
            },
        },
    }


def _components(app: Flask, labels: tuple[str, ...]) -> dict:
    top = {"type": "integer", "minimum": 1}
    if labels:
        top.update(maximum=len(labels), default=min(DEFAULT_TOP_K, len(labels)))
    label = {"type": "string", "enum": list(labels)} if labels else {"type": "string"}
    score = {"type": "number", "minimum": 0, "maximum": 1}
    limit = human_size(int(app.config["MAX_CONTENT_LENGTH"]))
    return {
        "parameters": {
            "top": {
                "name": "top",
                "in": "query",
                "required": False,
                "description": (
                    "How many of the best classes to list, from 1 to the number of classes; "
                    "empty means the default."
                ),
                "allowEmptyValue": True,
                "schema": top,
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "description": "Stable, for programs."},
                            "message": {"type": "string", "description": "What to do, for people."},
                        },
                    }
                },
            },
            "LabelScore": {
                "type": "object",
                "required": ["label", "score"],
                "properties": {"label": label, "score": score},
            },
            "Prediction": {
                "type": "object",
                "required": ["label", "score", "top"],
                "properties": {
                    "label": label,
                    "score": score,
                    "top": {"type": "array", "minItems": 1, "items": _ref("schemas", "LabelScore")},
                },
            },
            "BatchResults": {
                "type": "object",
                "required": ["results"],
                "properties": {
                    "results": {
                        "type": "array",
                        "items": {"oneOf": [_ref("schemas", "Prediction"), _ref("schemas", "Error")]},
                    }
                },
            },
            "Health": {
                "type": "object",
                "required": ["status", "model", "version", "engine"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok"]},
                    "model": {"type": "string"},
                    "version": {"type": "string"},
                    "engine": {"type": "string", "enum": ["onnxruntime", "torchscript"]},
                    "engine_reason": {
                        "type": "string",
                        "description": "Why this engine serves: the check that verified the ONNX copy, or why there is none.",
                    },
                },
            },
            **_monitoring_schemas(label),
            "Loading": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["loading"]}},
            },
            "ModelInfo": {
                "type": "object",
                "required": ["name", "version", "labels", "num_classes", "input_size", "engine"],
                "properties": {
                    "name": {"type": "string"},
                    "engine": {
                        "type": "string",
                        "enum": ["onnxruntime", "torchscript"],
                        "description": "What runs the model: ONNX Runtime on the verified ONNX copy, or the TorchScript file.",
                    },
                    "engine_reason": {"type": "string", "description": "Why this engine serves (as in GET /health)."},
                    "version": {"type": "string"},
                    "labels": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "num_classes": {"type": "integer", "minimum": 1},
                    "input_size": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                },
            },
        },
        "responses": {
            "BadRequest": _json(
                _ref("schemas", "Error"),
                "missing_file, empty_file, not_an_image or invalid_parameter (`top`).",
            ),
            "Unauthorized": _json(
                _ref("schemas", "Error"),
                "unauthorized: API_KEY is set and the request did not carry it.",
            ),
            "RequestTimeout": _json(
                _ref("schemas", "Error"), "request_timeout: the body stopped arriving (the front, nginx, answers it)."
            ),
            "RateLimited": {
                **_json(
                    _ref("schemas", "Error"),
                    "rate_limited: this client address sent over RATE_LIMIT requests a second, or has over "
                    "CONNECTION_LIMIT at once (the front, nginx, answers it; docs/front.md).",
                ),
                "headers": {"Retry-After": {"description": "Seconds to wait before sending again.",
                                            "schema": {"type": "integer", "minimum": 1}}},
            },
            "TooLarge": _json(
                _ref("schemas", "Error"),
                f"payload_too_large (the body is over {limit}), image_too_large (over "
                f"{int(app.config['MAX_IMAGE_PIXELS']):,} pixels) or too_many_files "
                f"(over {int(app.config['MAX_BATCH_FILES'])} in a batch).",
            ),
            "UnsupportedType": _json(
                _ref("schemas", "Error"),
                "unsupported_type: an image format or Content-Type that is not accepted.",
            ),
            "ModelNotReady": _json(_ref("schemas", "Error"), "model_not_ready: retry shortly."),
            "NoDeviceModel": _json(
                _ref("schemas", "Error"),
                "device_model_unavailable: no ONNX copy that matches the served model, or none offered.",
            ),
        },
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer"},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
    }


